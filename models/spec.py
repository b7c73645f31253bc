"""Complex STFT and its inverse with a sqrt-Hann window (analysis × synthesis = Hann)."""

from __future__ import annotations

import torch


def window(n_fft: int, device=None) -> torch.Tensor:
    return torch.hann_window(n_fft, periodic=True, device=device).sqrt()


def stft(x: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """(..., L) real → (..., F, T) complex, F = n_fft/2 + 1, centred frames."""
    shape = x.shape
    spec = torch.stft(x.reshape(-1, shape[-1]), n_fft, hop, window=window(n_fft, x.device), center=True,
                      pad_mode="constant", return_complex=True)
    return spec.reshape(*shape[:-1], *spec.shape[-2:])


def istft(spec: torch.Tensor, n_fft: int, hop: int, length: int) -> torch.Tensor:
    """(..., F, T) complex → (..., length) real; exact inverse of `stft`."""
    shape = spec.shape
    x = torch.istft(spec.reshape(-1, *shape[-2:]), n_fft, hop, window=window(n_fft, spec.device), center=True,
                    length=length)
    return x.reshape(*shape[:-2], length)
