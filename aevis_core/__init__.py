"""AEVis core library: models, layer graphs, image sets, attacks, scores and datapaths.

Pure library (never imports dash). See README.md for the method (Liu et al., "Analyzing the
Noise Robustness of Deep Neural Networks", IEEE TVCG 2020 / VAST 2018).
"""

from aevis_core.errors import AEVisError, ImageLoadError, ModelLoadError

__all__ = ["AEVisError", "ImageLoadError", "ModelLoadError", "__version__"]
__version__ = "0.1.0"
