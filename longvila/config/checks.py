"""The one validation helper of the config package: a failed check is a `ValueError` naming the key and the fix.

Every `__post_init__` of the config dataclasses (and the training checks in `longvila.plan.check`) calls it
with the full dotted key as it is written in `config.yaml`, so the message points at the line to change:

    check(self.seed >= 0, "pack.seed", "must be >= 0")   # ValueError: config 'pack.seed': must be >= 0
"""

from __future__ import annotations


def check(ok: bool, key: str, message: str) -> None:
    """Raise `ValueError("config '<key>': <message>")` unless `ok`.

    Args:
        ok: the condition that a valid config meets.
        key: the full dotted key in config.yaml, e.g. 'train.stage4[0].context'.
        message: what is wrong and how to fix it.
    """
    if not ok:
        raise ValueError(f"config '{key}': {message}")
