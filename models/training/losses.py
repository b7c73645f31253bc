"""Per-stem capped SNR loss with a silent-stem term (the TUSS/SFC recipe).

Active stem: −10·log10(|s|² / (|s − ŝ|² + τ|s|²)), τ = 10^(−cap/10), so a stem stops pulling
once it is `cap` dB clean. Silent stem (reference energy below −60 dB of the mixture):
10·log10((|ŝ|² + τ|x|²) / |x|²) weighted by `silent_weight`, which pushes the estimate
towards silence relative to the mixture instead of dividing by zero.
"""

from __future__ import annotations

import torch

EPS = 1e-8


def separation_loss(est: torch.Tensor, ref: torch.Tensor, mix: torch.Tensor,
                    cap_db: float = 30.0, silent_weight: float = 0.1) -> torch.Tensor:
    """est, ref: (B, S, 2, L); mix: (B, 2, L). Returns the mean over batch and stems."""
    tau = 10 ** (-cap_db / 10)
    est, ref, mix = est.float(), ref.float(), mix.float()
    ref_e = ref.pow(2).sum((-2, -1))
    err_e = (est - ref).pow(2).sum((-2, -1))
    mix_e = mix.pow(2).sum((-2, -1)).unsqueeze(1).clamp_min(EPS)
    active = ref_e > 1e-6 * mix_e
    snr = -10 * torch.log10(ref_e / (err_e + tau * ref_e + EPS) + EPS)
    silent = 10 * torch.log10((est.pow(2).sum((-2, -1)) + tau * mix_e) / mix_e)
    return torch.where(active, snr, silent_weight * silent).mean()
