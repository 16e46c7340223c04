"""3x3 stride-1 convolution by Winograd's minimal filtering F(4x4, 3x3) (Lavin & Gray 2016,
"Fast Algorithms for Convolutional Neural Networks", eq. 9-10).

Each 4x4 output tile is  Y = A^T [ (G g G^T) * (B^T d B) ] A  for the 6x6 input tile d it sees,
so a tile costs 36 multiplications per (input, output) channel pair instead of 144. Summed over
input channels, the element-wise products become 36 independent GEMMs [tiles, C] x [C, O]: the
one place where the work is, and it runs at the CPU's GEMM speed. The transforms are small
matrices applied to every tile (also GEMMs, through Kronecker products).

Used for inference on the CPU, where the 3x3 convolutions of full-width StyleGAN2/3 dominate
(512 x 512 channels). fp32 results agree with F.conv2d to ~1e-5 relative at 512 channels (RMS ~3e-6;
torch's own convolution ~3e-7), ~1e-6 on a whole generator's image (tested).
"""
import torch
import torch.nn.functional as F

# Interpolation points 0, 1, -1, 2, -2 and infinity.
_BT = [[4, 0, -5, 0, 1, 0],
       [0, -4, -4, 1, 1, 0],
       [0, 4, -4, -1, 1, 0],
       [0, -2, -1, 2, 1, 0],
       [0, 2, -1, -2, 1, 0],
       [0, 4, 0, -5, 0, 1]]
_G = [[1 / 4, 0, 0],
      [-1 / 6, -1 / 6, -1 / 6],
      [-1 / 6, 1 / 6, -1 / 6],
      [1 / 24, 1 / 12, 1 / 6],
      [1 / 24, -1 / 12, 1 / 6],
      [0, 0, 1]]
_AT = [[1, 1, 1, 1, 1, 0],
       [0, 1, -1, 2, -2, 0],
       [0, 1, 1, 4, 4, 0],
       [0, 1, -1, 8, -8, 1]]


def _kron(m):
    """(M (x) M): applies M on both sides of a flattened tile, M t M^T, as one matrix product."""
    m = torch.tensor(m, dtype=torch.float64)
    return torch.kron(m, m)


_KB, _KG, _KA = _kron(_BT), _kron(_G), _kron(_AT)  # [36, 36], [36, 9], [16, 36]


def winograd_applicable(x, w, stride=1, groups=1):
    """Worth it and exact enough: CPU, float32/64, 3x3 kernel, stride 1, no grad, and enough
    channels that the GEMMs outweigh the memory-bound tile transforms (measured: 512x512 at 148 px
    2.0x faster than torch's conv, 256x181 at 276 px 1.1x, 181x128 at 276 px 0.95x)."""
    return (not x.is_cuda and x.dtype in (torch.float32, torch.float64) and w.shape[-2:] == (3, 3)
            and stride == 1 and groups == 1 and w.shape[0] * w.shape[1] >= 200 * 200
            and not (torch.is_grad_enabled() and (x.requires_grad or w.requires_grad)))


def conv3x3_winograd(x, w, padding=0):
    """Same as F.conv2d(x, w, padding=padding) for w [O, C, 3, 3] (cross-correlation, stride 1)."""
    n, c, h, wd = x.shape
    o = w.shape[0]
    ho, wo = h + 2 * padding - 2, wd + 2 * padding - 2
    th, tw = -(-ho // 4), -(-wo // 4)
    # Pad so that th x tw tiles of 6x6 with stride 4 cover the output (extra rows are cropped).
    xp = F.pad(x, [padding, 4 * tw + 2 - wd - padding, padding, 4 * th + 2 - h - padding])
    tiles = xp.unfold(2, 6, 4).unfold(3, 6, 4)                       # [N, C, th, tw, 6, 6]
    tiles = tiles.permute(4, 5, 0, 2, 3, 1).reshape(36, n * th * tw * c)
    v = _KB.to(x) @ tiles                                            # B^T d B, [36, N*T*C]
    u = torch.einsum("ak,ock->aco", _KG.to(x), w.reshape(o, c, 9).to(x.dtype))
    m = torch.bmm(v.view(36, n * th * tw, c), u)                     # [36, N*T, O]
    y = _KA.to(x) @ m.view(36, -1)                                   # A^T m A, [16, N*T*O]
    y = y.view(4, 4, n, th, tw, o).permute(2, 5, 3, 0, 4, 1).reshape(n, o, 4 * th, 4 * tw)
    return y[:, :, :ho, :wo]
