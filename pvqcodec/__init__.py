"""pvqcodec: a versioned codec for the weights of large language models.

    import pvqcodec
    with pvqcodec.open("model.pvqc") as f:
        w = f.decode("model.layers.0.mlp.up_proj.weight")   # float32 numpy array
"""

__version__ = "0.1.0"

from .api import PvqcFile, open  # noqa: E402,F401,A004
from .errors import PvqcodecError  # noqa: E402,F401
