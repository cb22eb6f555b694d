"""Adversarial attacks in [0, 1] pixel units and their lossless storage.

``run_attack(entry.model, x, y, AttackConfig("mifgsm", eps=8/255))`` crafts (N, 3, H, W)
adversarial images; :func:`transfer_attack` crafts on one model and evaluates on another
(black-box transfer); :func:`save_adversarial` / :func:`load_adversarial` store them as 8-bit
PNGs with a ``manifest.json``. Methods: :data:`METHODS`.
"""

from aevis_core.attacks.config import (
    LINF_METHODS,
    METHODS,
    TARGETED_METHODS,
    AttackConfig,
    parse_eps,
    validate_config,
)
from aevis_core.attacks.runner import (
    TransferResult,
    compare_predictions,
    run_attack,
    transfer_attack,
)
from aevis_core.attacks.storage import (
    AdvRecord,
    images_to_tensor,
    load_adversarial,
    quantise,
    safe_stem,
    save_adversarial,
)

__all__ = [
    "LINF_METHODS", "METHODS", "TARGETED_METHODS", "AdvRecord", "AttackConfig", "TransferResult",
    "compare_predictions", "images_to_tensor", "load_adversarial", "parse_eps", "quantise",
    "run_attack", "safe_stem", "save_adversarial", "transfer_attack", "validate_config",
]
