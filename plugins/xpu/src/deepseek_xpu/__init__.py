"""deepseek-xpu: Intel GPUs (``xpu``) as a DeepSeek backend, through torch's own XPU support.

Importing this package is cheap: DeepSeek imports ``deepseek_xpu.plugin`` at discovery and
``deepseek_xpu.backend`` when the ``xpu`` backend is first used.
"""

__version__ = "0.1.0"
