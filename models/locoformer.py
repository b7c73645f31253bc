"""The TF-Locoformer layer (Saijo et al., IWAENC 2024), written from the paper's description.

A layer is a macaron of three pre-normed residual branches along one axis of the
time-frequency grid: conv-SwiGLU FFN → multi-head self-attention with rotary positions →
conv-SwiGLU FFN. The convolutions give each token a local neighbourhood along the same
axis, which is what lets the model drop positional tricks beyond RoPE.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RMSGroupNorm(nn.Module):
    """Divide each of `groups` channel groups by its RMS (no centring), then scale per channel."""

    def __init__(self, dim: int, groups: int, eps: float = 1e-5):
        super().__init__()
        self.groups, self.eps = groups, eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        g = x.reshape(*shape[:-1], self.groups, shape[-1] // self.groups)
        # eps outside the sqrt, as in the reference, keeps silent tokens at exactly zero
        g = g / (g.pow(2).mean(-1, keepdim=True).sqrt() + self.eps)
        return g.reshape(shape) * self.weight


class ConvSwiGLU(nn.Module):
    """Conv1d(D→2H, k) → value ⊙ SiLU(gate) → ConvTranspose1d(H→D, k), length-preserving.

    Padding k−1 on both sides and cropping the centre gives every output a receptive field
    of 2k−1 tokens centred on itself.
    """

    def __init__(self, dim: int, hidden: int, kernel: int):
        super().__init__()
        self.pad = kernel - 1
        self.conv = nn.Conv1d(dim, 2 * hidden, kernel)
        self.deconv = nn.ConvTranspose1d(hidden, dim, kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, L, D)
        length = x.shape[1]
        y = F.pad(x.transpose(1, 2), (self.pad, self.pad))
        value, gate = self.conv(y).chunk(2, dim=1)
        y = self.deconv(value * F.silu(gate))
        return y[..., self.pad:self.pad + length].transpose(1, 2)


class Rotary(nn.Module):
    """Rotary position embedding over the last dimension of (N, heads, L, head_dim)."""

    def __init__(self, head_dim: int, base: float = 10000.0):
        super().__init__()
        inv = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        self.register_buffer("inv_freq", inv, persistent=False)
        self._cache: tuple[int, torch.device, torch.Tensor, torch.Tensor] | None = None

    def _tables(self, length: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if self._cache is None or self._cache[0] < length or self._cache[1] != device:
            pos = torch.arange(length, device=device, dtype=torch.float32)
            angles = torch.outer(pos, self.inv_freq.to(device))
            self._cache = (length, device, angles.cos(), angles.sin())
        _, _, cos, sin = self._cache
        return cos[:length], sin[:length]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cos, sin = self._tables(x.shape[-2], x.device)
        # rotation in fp32 even under autocast: positions far apart lose precision in bf16
        xf = x.float()
        x1, x2 = xf[..., 0::2], xf[..., 1::2]
        out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)
        return out.to(x.dtype)


class SelfAttention(nn.Module):
    def __init__(self, dim: int, attn_dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(dim, 3 * attn_dim, bias=False)
        self.out = nn.Linear(attn_dim, dim, bias=False)
        self.rotary = Rotary(attn_dim // heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, L, D)
        n, length, _ = x.shape
        q, k, v = self.qkv(x).reshape(n, length, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(
            self.rotary(q), self.rotary(k), v, dropout_p=self.dropout if self.training else 0.0
        )
        return self.out(y.transpose(1, 2).reshape(n, length, -1))


class LocoformerLayer(nn.Module):
    """x += FFN(norm(x)); x += MHSA(norm(x)); x += FFN(norm(x)), along the sequence axis."""

    def __init__(self, dim: int, attn_dim: int, heads: int, groups: int, hidden: int,
                 kernel: int, dropout: float = 0.0):
        super().__init__()
        self.norms = nn.ModuleList(RMSGroupNorm(dim, groups) for _ in range(3))
        self.ffn1 = ConvSwiGLU(dim, hidden, kernel)
        self.attn = SelfAttention(dim, attn_dim, heads, dropout)
        self.ffn2 = ConvSwiGLU(dim, hidden, kernel)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, L, D)
        x = x + self.drop(self.ffn1(self.norms[0](x)))
        x = x + self.drop(self.attn(self.norms[1](x)))
        return x + self.drop(self.ffn2(self.norms[2](x)))


class TFBlock(nn.Module):
    """A frequency-path layer (sequence over bands) then a time-path layer (sequence over frames)."""

    def __init__(self, dim: int, attn_dim: int, heads: int, groups: int, hidden: int,
                 kernel_freq: int, kernel_time: int, dropout: float = 0.0):
        super().__init__()
        self.freq = LocoformerLayer(dim, attn_dim, heads, groups, hidden, kernel_freq, dropout)
        self.time = LocoformerLayer(dim, attn_dim, heads, groups, hidden, kernel_time, dropout)

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # (B, T, K, D)
        b, t, k, d = z.shape
        z = self.freq(z.reshape(b * t, k, d)).reshape(b, t, k, d)
        z = z.transpose(1, 2).reshape(b * k, t, d)
        return self.time(z).reshape(b, k, t, d).transpose(1, 2)
