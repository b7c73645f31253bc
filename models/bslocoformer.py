"""BS-Locoformer: TF-Locoformer blocks on a band-split spectrogram of stereo music.

stereo wave → STFT (sqrt-Hann) → per band: both channels' Re/Im → RMSNorm → Linear → D
→ L × TFBlock over (frames × bands) → per band: RMSNorm → MLP → complex masks per stem and
channel → masked mixture spectra → iSTFT. Masks (rather than direct mapping) keep every stem
a filtered copy of the input, so the network never has to learn the input's level: nothing
is normalized before inference and the output scales with the input.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

from .config import CHANNELS, ModelConfig
from .locoformer import TFBlock
from .spec import istft, stft

RE_IM = 2


class GroupedLinear(nn.Module):
    """`n` independent Linear layers applied to (…, n, in) at once (one einsum, not n calls)."""

    def __init__(self, n: int, d_in: int, d_out: int):
        super().__init__()
        bound = d_in ** -0.5
        self.weight = nn.Parameter(torch.empty(n, d_in, d_out).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(n, d_out).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("...ni,nio->...no", x, self.weight) + self.bias


class GroupedRMSNorm(nn.Module):
    """RMSNorm over the last dim with its own scale per band."""

    def __init__(self, n: int, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(n, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class BandGroup(nn.Module):
    """Encoder and decoder for `count` adjacent bands of `width` bins each."""

    def __init__(self, count: int, width: int, cfg: ModelConfig):
        super().__init__()
        self.count, self.width = count, width
        features = width * CHANNELS * RE_IM
        out = features * len(cfg.stems) * (2 if cfg.decoder_glu else 1)
        self.enc_norm = GroupedRMSNorm(count, features)
        self.enc = GroupedLinear(count, features, cfg.dim)
        self.dec_norm = GroupedRMSNorm(count, cfg.dim)
        self.dec_hidden = GroupedLinear(count, cfg.dim, cfg.decoder_hidden)
        self.dec_out = GroupedLinear(count, cfg.decoder_hidden, out)
        self.glu = cfg.decoder_glu
        self._init_identity_split(len(cfg.stems))

    @torch.no_grad()
    def _init_identity_split(self, stems: int) -> None:
        # Start every stem at mask 1/S (real): the untrained model splits the mixture evenly
        # and the stems sum to it, a far better starting point than random masks.
        self.dec_out.weight.zero_()
        bias = torch.zeros(self.count, self.width, stems, CHANNELS, RE_IM)
        bias[..., 0] = 1.0 / stems
        bias = bias.reshape(self.count, -1)
        if self.glu:  # glu(a, b) = a·σ(b); σ(0) = ½, so the value half starts at 2/S
            bias = torch.cat([2 * bias, torch.zeros_like(bias)], dim=-1)
        self.dec_out.bias.copy_(bias)

    def encode(self, spec: torch.Tensor) -> torch.Tensor:  # (B, 2, bins, T) complex → (B, T, count, D)
        b, _, _, t = spec.shape
        # a band's features: all its bins of both channels, real and imaginary
        x = torch.view_as_real(spec).permute(0, 3, 2, 1, 4).reshape(b, t, self.count, -1)
        return self.enc(self.enc_norm(x))

    def hidden(self, z: torch.Tensor) -> torch.Tensor:  # (B, T, count, D) → (B, T, count, h)
        return torch.tanh(self.dec_hidden(self.dec_norm(z)))

    def mask(self, hidden: torch.Tensor, stem: int, stems: int) -> torch.Tensor:
        """One stem's complex-mask values for these bands, (B, T, count·width, 2, 2): the slice of
        the output layer that belongs to `stem` (the same numbers as the full layer)."""
        n, h = self.count, hidden.shape[-1]
        halves = 2 if self.glu else 1
        w = self.dec_out.weight.reshape(n, h, halves, self.width, stems, -1)[:, :, :, :, stem]
        b = self.dec_out.bias.reshape(n, halves, self.width, stems, -1)[:, :, :, stem]
        y = torch.einsum("btnh,nhgwc->btngwc", hidden, w) + b
        if self.glu:  # glu(a, b) = a·σ(b) over the two halves
            y = y[..., 0, :, :] * torch.sigmoid(y[..., 1, :, :])
        else:
            y = y[..., 0, :, :]
        bsz, t = hidden.shape[:2]
        return y.reshape(bsz, t, n * self.width, CHANNELS, RE_IM)


class BSLocoformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.groups = nn.ModuleList(BandGroup(count, width, cfg) for count, width in cfg.bands)
        self.blocks = nn.ModuleList(
            TFBlock(cfg.dim, cfg.attn_dim, cfg.heads, cfg.groups, cfg.ffn_hidden,
                    cfg.kernel_freq, cfg.kernel_time, cfg.dropout)
            for _ in range(cfg.blocks)
        )

    @property
    def stems(self) -> tuple[str, ...]:
        return self.cfg.stems

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, 2, L) mixture → (B, S, 2, L) stems, S = len(cfg.stems)."""
        cfg, length = self.cfg, wave.shape[-1]
        spec = stft(wave, cfg.n_fft, cfg.hop)  # (B, 2, F, T) complex
        # Band groups are encoded, masked and decoded one at a time, so no full-resolution
        # feature or mask tensor is ever materialized (inference memory stays small).
        bins = [(g, start, start + g.count * g.width) for g, start in
                zip(self.groups, [0] + list(itertools.accumulate(g.count * g.width for g in self.groups)))]
        z = torch.cat([g.encode(spec[:, :, a:b]) for g, a, b in bins], dim=2)  # (B, T, K, D)
        for block in self.blocks:
            z = block(z)
        # The mask head, masking and iSTFT run in fp32 even under autocast (bf16 on a GPU): a
        # bf16 mask value carries ~3 significant digits, an error the iSTFT spreads over every
        # sample of the stem, while the head is ~1 % of the network's work.
        with torch.autocast(wave.device.type, enabled=False):
            z = z.float()
            stems, hidden, k = len(cfg.stems), [], 0
            for g in self.groups:
                hidden.append(g.hidden(z[:, :, k:k + g.count]))
                k += g.count
            out = wave.new_empty(wave.shape[0], stems, 2, length, dtype=torch.float32)
            for s in range(stems):  # one stem at a time: memory does not grow with the number of stems
                est = torch.empty_like(spec)
                for (g, a, b), h in zip(bins, hidden):
                    mask = torch.view_as_complex(g.mask(h, s, stems).float().contiguous())  # (B, T, bins, 2)
                    est[:, :, a:b] = mask.permute(0, 3, 2, 1) * spec[:, :, a:b]
                out[:, s] = istft(est, cfg.n_fft, cfg.hop, length)
        return out


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
