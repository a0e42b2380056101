"""distral_tf: Distral (Teh et al., 2017) in TensorFlow 2.

Importing the package before TensorFlow turns on TensorFlow's oneDNN kernels
(``TF_ENABLE_ONEDNN_OPTS=1``) unless the variable is already set: TensorFlow
reads it once, when it is imported, and the wheel leaves them off on CPUs
without AVX-512. With them the convolution columns' gradient step on the pixel
level sets is about twice as fast on x86 CPUs with AVX2 (docs/agents.md,
"TensorFlow's oneDNN kernels"). ``TF_ENABLE_ONEDNN_OPTS=0`` keeps TensorFlow's
own (Eigen) kernels.
"""

import os

os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '1')
