"""Which arrangement of the WGAN-GP critic step is fastest under torch.compile?

Candidates, same D, same batch, same machine, one run (the penalty needs double backward,
which torch.compile refuses through aot-autograd):
  eager      the reference step, no compile
  func       whole loss via torch.func (grad of input-grad), compiled as one graph
  split      scoring passes compiled, penalty pass eager
  split-lazy4  split, with the penalty every 4th step, scaled by 4 (time per step, amortised)
Each candidate's weight gradients are checked against eager before timing.

    python -m bench.d_step_arrangements --res 16 --batch 32 [--device cuda]
"""

from __future__ import annotations

import argparse
import time

import torch

from fastpggan import Discriminator
from fastpggan.loss import critic_terms, d_loss_wgan_gp, gradient_penalty, penalty_from_grad


def functional_d_grads(D: torch.nn.Module, **compile_kwargs):
    """Compiled ``(params, real, fake, fade, alpha) -> (weight grads, (loss, stats))``: the
    critic loss with its penalty as a pure function of D's params, differentiated by torch.func
    (input gradient by ``grad``, weight gradient by ``grad_and_value``) and compiled as one graph."""

    def loss(params, real, fake, fade, alpha):
        def critic(x):
            return torch.func.functional_call(D, params, (x, fade))

        grad = torch.func.grad(lambda m: critic(m).sum())(torch.lerp(real, fake, alpha))
        real_scores, fake_scores, gp = critic(real), critic(fake), penalty_from_grad(grad)
        terms = critic_terms(real_scores, fake_scores, gp)
        return terms.loss(), terms.stats(real_scores, fake_scores, gp)

    return torch.compile(torch.func.grad_and_value(loss, has_aux=True), **compile_kwargs)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--res", type=int, default=16)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--fmap-base", type=int, default=512)
    p.add_argument("--fmap-max", type=int, default=64)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--impl", default="auto")
    p.add_argument("--iters", type=int, default=8)
    args = p.parse_args(argv)
    dev = torch.device(args.device)
    torch.manual_seed(0)
    D = Discriminator(args.res, args.fmap_base, args.fmap_max, impl=args.impl).to(dev)
    N, R = args.batch, args.res
    real, fake = torch.randn(N, 3, R, R, device=dev), torch.randn(N, 3, R, R, device=dev)
    alpha = torch.rand(N, 1, 1, 1, device=dev)
    fade = torch.tensor(0.5, device=dev)
    params = dict(D.named_parameters())
    names = list(params)

    def eager():
        loss, _ = d_loss_wgan_gp(D, real, fake, fade, alpha=alpha)
        return torch.autograd.grad(loss, list(params.values()), allow_unused=True)

    func_grads = functional_d_grads(D, dynamic=False)

    def func():
        grads, _ = func_grads({k: v.detach() for k, v in params.items()}, real, fake, fade, alpha)
        return [grads[k] for k in names]

    D_c = torch.compile(D, dynamic=False)
    counter = [0]

    def split(every: int = 1):
        loss = critic_terms(D_c(real, fade), D_c(fake, fade), None).loss()
        if counter[0] % every == 0:
            loss = loss + every * 10.0 * gradient_penalty(D, real, fake, fade, alpha=alpha).mean()
        counter[0] += 1
        return torch.autograd.grad(loss, list(params.values()), allow_unused=True)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    want = eager()
    candidates = {"eager": eager, "func": func, "split": split, "split-lazy4": lambda: split(4)}
    for name, fn in candidates.items():
        t = time.perf_counter()
        got = fn()
        sync()
        if name != "split-lazy4":
            err = max(
                ((g if g is not None else 0) - (w if w is not None else 0)).abs().max().item()
                / max(w.abs().max().item() if w is not None else 0, 1e-12)
                for g, w in zip(got, want) if g is not None or w is not None
            )
            print(f"{name}: first call {time.perf_counter() - t:.1f}s, max rel grad error vs eager {err:.1e}")
    best = {name: float("inf") for name in candidates}
    for _ in range(3):  # interleaved rounds: a noisy machine hits every candidate alike
        for name, fn in candidates.items():
            counter[0] = 0
            sync()
            t = time.perf_counter()
            for _ in range(args.iters):
                fn()
            sync()
            best[name] = min(best[name], (time.perf_counter() - t) / args.iters)
    print(f"device {dev} ({'CPU figures' if dev.type == 'cpu' else torch.cuda.get_device_name(dev)}), "
          f"res {R}, batch {N}, fmap_base {args.fmap_base}, fmap_max {args.fmap_max}")
    for name, t in best.items():
        print(f"  {name:12s} {t * 1e3:8.1f} ms/step  {best['eager'] / t:5.2f}x eager")


if __name__ == "__main__":
    main()
