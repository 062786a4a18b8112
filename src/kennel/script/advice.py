"""Findings in a user's script's own terms. The debugger's rules advise in kennel's settings (``optim.lr``,
``model.freeze``, ``early_stopping: 2``), which a script run by ``kennel run`` does not have: inside the script,
the hook rewords each finding to say what its code would change instead (the learning rate, ``requires_grad``,
a DataLoader's ``num_workers``)."""

from __future__ import annotations

import re

# Whole sentences first (a kennel job keeps its best weights; a script keeps what it saves), then the settings,
# longest first, so that ``optim.lr`` is not read inside ``optim.lr_something``.
_SENTENCES = (
    (
        re.compile(r"The best weights \(epoch (\d+)\) are kept; early_stopping: \d+ ends such jobs sooner\."),
        r"Saving the weights of the best epoch (\1) and stopping early would end such a run sooner.",
    ),
    (
        re.compile(r"\(a larger backbone with --model, fine-tuning with --freeze N\)"),
        "(a larger backbone, or fine-tuning more of its layers)",
    ),
    (
        re.compile(r"\(data\.augment: strong, or feature_views: 3 with a frozen backbone\)"),
        "(random crops, flips, colour jitter in the training transform)",
    ),
    (re.compile(r"a larger backbone \(--model\)"), "a larger backbone"),
    (re.compile(r" or early_stopping: \d+"), " or stop early"),
    (re.compile(r"early_stopping: \d+"), "stopping early"),
    (re.compile(r"\bor early_stopping\b"), "or stopping early"),
)
_TERMS = {
    "optim.warmup_epochs at 1 or more": "a warm-up (the learning rate rising from near 0 over the first epoch)",
    "optim.backbone_lr_scale": "the backbone's own learning rate",
    "optim.weight_decay": "the optimizer's weight_decay",
    "optim.lr": "the learning rate",
    "model.pretrained: true": "pretrained=True",
    "model.freeze": "requires_grad = False",
    "model.dropout": "dropout",
    "data.workers: 0": "DataLoader(num_workers=0)",
    "debug.modes.TRAIN.collections": "the capture (kennel run --debug full)",
    "debug.modes.EVAL.collections": "the capture (kennel run --debug full)",
}
_TERM = re.compile("|".join(re.escape(term) for term in sorted(_TERMS, key=len, reverse=True)))


def in_script_terms(text: str) -> str:
    """``text`` (a finding's message or advice) with kennel's settings said as a script's code would say them."""
    for pattern, replacement in _SENTENCES:
        text = pattern.sub(replacement, text)
    return _TERM.sub(lambda match: _TERMS[match.group(0)], text)
