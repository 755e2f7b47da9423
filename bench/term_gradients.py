"""How each VerSemi loss term pulls on the weights every prompt shares, per dataset: the gradient of every
term on its own (same patches, same CutMix cubes), its norm against the supervised term's, and the
cosine between them. A term whose gradient is large or points against the supervised one trains the
shared weights away from what the labeled images ask for. ``--part backbone`` (default) measures the
encoder-decoder; ``--part head`` the dynamic head's shared weights (its input norm and projection, and
the controller's bias and the columns that read the pooled image context; not the per-prompt code
columns).

A diagnostic for a VerSemi run that loses to supervised-only (``bench/semisup.py`` run folders hold a
``config.json``; checkpoints are ``train/stage2/last.pt``):

    .venv/bin/python bench/term_gradients.py RUN/config.json \\
        --checkpoint OTHER_RUN/train/stage2/last.pt --steps 8 --json

The weights come from ``--checkpoint`` (random initial weights without it), the terms and their weights
from the config. ``sum_check`` is the relative difference between the sum of the weighted term
gradients and the gradient of the whole loss (0 up to the autocast precision): it shows the terms
were isolated right.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

TERMS = ("supervised", "synthetic", "cube", "consistency")


def _weight_field(term: str) -> str:
    return f"{term}_weight"


def _flat_grad(parameters: list) -> "torch.Tensor":
    import torch

    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).detach().float().flatten()
                      for p in parameters])


PARTS = ("backbone", "head")


def shared_gradient(model, part: str) -> Callable[[], "torch.Tensor"]:
    """A function returning the current gradient of ``part``'s prompt-shared weights, flattened."""
    import torch

    if part == "backbone":
        parameters = [p for p in model.backbone.parameters() if p.requires_grad]
        return lambda: _flat_grad(parameters)
    if part != "head":
        raise ValueError(f"unknown part {part!r}; expected one of {', '.join(PARTS)}")
    head = model.head
    whole = [*head.input_norm.parameters(), *head.input_projection.parameters(), head.controller.bias]
    context = head.controller.in_features - (head.num_prompts if head.prompt_embedding is None
                                             else head.prompt_embedding.embedding_dim)

    def flat() -> torch.Tensor:
        weight = head.controller.weight
        columns = (weight.grad if weight.grad is not None else torch.zeros_like(weight))[:, :context]
        return torch.cat([_flat_grad(whole), columns.detach().float().flatten()])

    return flat


def term_gradients(trainer, steps: int, part: str = "backbone") -> dict:
    """Per dataset and term: mean over ``steps`` steps of ``|w g_term| / |g_supervised|`` and of
    ``cos(g_term, g_supervised)`` on ``part``'s prompt-shared weights, and the worst ``sum_check``."""
    import torch

    method = trainer.method
    if getattr(method, "name", "") != "versemi" or method.stage != 2:
        raise SystemExit("term_gradients: the config must train VerSemi with its semi-supervised terms "
                         "(training.method: versemi)")
    weights = {t: float(getattr(method.options, _weight_field(t))) for t in TERMS}
    # Every term computed on its own with the others at a weight too small to reach a bf16 gradient:
    # every code path (and so every random draw of cubes and partners) stays the same as in training.
    isolated = {}
    for term in TERMS:
        options = dataclasses.replace(method.options, **{_weight_field(t): (1.0 if t == term else 1e-30) for t in TERMS})
        isolated[term] = copy.copy(method)
        isolated[term].options = options
    gradient = shared_gradient(trainer.model, part)
    next_batches = trainer._batches()
    sums: dict[str, dict[str, list[float]]] = {}
    worst_sum_check = 0.0
    trainer.model.train()
    for _ in range(steps):
        for batch in next_batches():
            dataset = batch.datasets[0]
            if batch.unlabeled is None:
                continue
            ctx = dataclasses.replace(trainer._step_context(batch), step=trainer.max_steps)  # ramp-ups at their end
            state = ctx.generator.get_state()
            grads = {}
            for name, terms_method in [*isolated.items(), ("total", method)]:
                ctx.generator.set_state(state)
                trainer.model.zero_grad(set_to_none=True)
                with torch.autocast(trainer.device.type, dtype=trainer.amp_dtype or torch.float32,
                                    enabled=trainer.amp_dtype is not None):
                    loss = terms_method.losses(batch, ctx).total
                loss.backward()
                grads[name] = gradient()
            weighted = {t: weights[t] * grads[t] for t in TERMS}
            reference = weighted["supervised"].norm()
            rows = sums.setdefault(dataset, {})
            for t in TERMS:
                rows.setdefault(f"{t}_norm_ratio", []).append(float(weighted[t].norm() / reference))
                rows.setdefault(f"{t}_cosine", []).append(
                    float(torch.nn.functional.cosine_similarity(grads[t], grads["supervised"], dim=0)))
            extra = sum(weighted[t] for t in TERMS if t != "supervised")
            rows.setdefault("unlabeled_terms_cosine", []).append(
                float(torch.nn.functional.cosine_similarity(extra, grads["supervised"], dim=0)))
            summed = sum(weighted.values())
            worst_sum_check = max(worst_sum_check, float((summed - grads["total"]).norm() / grads["total"].norm()))
    trainer.model.zero_grad(set_to_none=True)
    return {
        "weights": weights,
        "part": part,
        "steps": steps,
        "datasets": {d: {k: sum(v) / len(v) for k, v in rows.items()} for d, rows in sums.items()},
        "sum_check": worst_sum_check,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("config", type=Path, help="training config of the run (a bench run folder's config.json)")
    p.add_argument("--checkpoint", type=Path, help="weights to measure at (default: the initial weights)")
    p.add_argument("--steps", type=int, default=8, help="steps of patches to average over (default 8)")
    p.add_argument("--part", choices=PARTS, default="backbone",
                   help="which prompt-shared weights to measure on (default backbone)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    args = p.parse_args(argv)

    import torch

    from versemi.data.config import ConfigError, load_config
    from versemi.training.options import TrainingOptionsError, training_options
    from versemi.training.trainer import Trainer

    if args.steps < 1:
        raise SystemExit("term_gradients: --steps must be >= 1")
    if args.checkpoint is not None and not args.checkpoint.is_file():
        raise SystemExit(f"term_gradients: {args.checkpoint}: no such file")
    try:
        config = load_config(args.config)
        section = {**config.training, "num_workers": 0, "stage1_fraction": 0.0}
        options = training_options(section, str(args.config))
    except (ConfigError, TrainingOptionsError) as exc:
        raise SystemExit(f"term_gradients: {exc}") from exc
    with tempfile.TemporaryDirectory() as out:  # the trainer's logs; nothing of the run is touched
        trainer = Trainer(config, options, 2, Path(out), torch.device("cpu"), init_checkpoint=args.checkpoint,
                          progress=False)
        result = term_gradients(trainer, args.steps, args.part)
        trainer.log.close()
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{args.part}; weights {result['weights']}; {args.steps} steps; sum check {result['sum_check']:.2e}")
    for dataset, row in result["datasets"].items():
        cells = "  ".join(f"{t} {row[f'{t}_norm_ratio']:.2f}x cos {row[f'{t}_cosine']:+.2f}" for t in TERMS[1:])
        print(f"{dataset:24s} {cells}  unlabeled terms cos {row['unlabeled_terms_cosine']:+.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
