"""Shared by every test folder: the models several folders test on (``seed_models``,
``style_models``) live beside this file, which pytest puts on ``sys.path`` for them.

Slow tests (each starts Python processes, runs a notebook or a whole example) carry
``@pytest.mark.slow``; CI runs them all, ``-m "not slow"`` leaves them out while editing.
"""
