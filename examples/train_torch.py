"""A plain PyTorch training loop with aipm: one ``tr.log`` per step, an eval every N steps.

The loss is logged as a tensor: on a GPU it stays there and is read back in batches (no
per-step ``.item()``). Every ``--eval-every`` steps the model is evaluated on a held-out
set and the per-example table goes through ``tr.log_eval``: AI-PM metrics are logged and
the guardrails' bounds checked (a breach warns at once). Prints the run's reference last.

    python examples/train_torch.py --steps 300 --guardrails guardrails.yaml
    aipm runs history $(python examples/train_torch.py | tail -1) --keys loss,accuracy
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

import aipm_tracking as aipm


def make_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 16, generator=g)
    w = torch.randn(16, 4, generator=torch.Generator().manual_seed(0))
    y = (x @ w + 0.5 * torch.randn(n, 4, generator=g)).argmax(1)
    return x, y


def eval_table(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> pd.DataFrame:
    """The per-example table aipm evaluates (DESIGN §3 columns)."""
    with torch.no_grad():
        probs = F.softmax(model(x), dim=1).cpu().numpy()
    return pd.DataFrame({"example_id": np.arange(len(y)), "label": y.cpu().numpy(),
                         "prediction": probs.argmax(1), "confidence": probs.max(1)})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--to", default="local", help="local, mlflow:EXP or wandb:ENTITY/PROJECT")
    ap.add_argument("--store", default=None, help="local store directory")
    ap.add_argument("--guardrails", default=None, help="guardrails YAML")
    args = ap.parse_args()

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    x, y = make_data(4096, seed=1)
    xv, yv = make_data(512, seed=2)
    x, y, xv, yv = x.to(dev), y.to(dev), xv.to(dev), yv.to(dev)
    model = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(),
                                torch.nn.Linear(64, 4)).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.steps)

    with aipm.Tracker(to=args.to, store=args.store, run_name="train-torch-example",
                      model="mlp", model_version="1", guardrails=args.guardrails,
                      config={"lr": 3e-3, "steps": args.steps, "device": dev}) as tr:
        for step in range(args.steps):
            idx = torch.randint(0, len(x), (128,), device=dev)
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            tr.log(step=step, loss=loss, lr=sched.get_last_lr()[0])  # no .item(): no sync
            sched.step()
            if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
                model.eval()
                tr.log_eval(eval_table(model, xv, yv), step=step)
                model.train()
    print(tr.ref)


if __name__ == "__main__":
    main()
