"""A float32 exp that the compiler can vectorise, for the LSTM cells of the compiled acting step
(actor/act_kernel.py) and the learner's window unroll (common/nets/window_kernel.py). Without Intel's SVML,
Numba calls libm once per element for np.exp; an LSTM step of a few agents makes hundreds of those calls.
Torch-free, so that actors can import it."""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def exp_f32(x, out, bits):
    """out = exp(x) for 1-D float32 x, to about one ulp (Cephes' expf: 2^n times a degree-6 polynomial), in
    loops the compiler vectorises: the LSTM's sigmoids and tanhs cost a libm call each otherwise. `bits` is
    int32 scratch of x's length; x is clamped to [-87, 88]."""
    f32 = np.float32
    for i in range(x.shape[0]):
        v = min(max(x[i], f32(-87.0)), f32(88.0))
        fx = np.floor(v * f32(1.44269504088896341) + f32(0.5))
        r = v - fx * f32(0.693359375) + fx * f32(2.12194440e-4)
        y = (((((f32(1.9875691500e-4) * r + f32(1.3981999507e-3)) * r + f32(8.3334519073e-3)) * r
               + f32(4.1665795894e-2)) * r + f32(1.6666665459e-1)) * r + f32(5.0000001201e-1)) * (r * r) + r + f32(1.0)
        out[i] = y
        bits[i] = (np.int32(fx) + np.int32(127)) << 23
    scale = bits.view(np.float32)  # 2^n, built in the exponent bits
    for i in range(x.shape[0]):
        out[i] *= scale[i]
