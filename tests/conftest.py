"""Imports ``distral_tf`` before any test module imports TensorFlow.

The package sets TensorFlow's kernel choice (``TF_ENABLE_ONEDNN_OPTS``), which
TensorFlow reads only when it is imported: the tests run the kernels the
commands run.
"""

import distral_tf  # noqa: F401  pylint: disable=unused-import
