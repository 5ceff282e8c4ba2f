"""deepseek-plugin-simaccel: a simulated accelerator for DeepSeek, and the example of how
to write a third-party plugin.

Importing this package is cheap: DeepSeek imports only ``deepseek_simaccel.plugin`` when
it discovers plugins, and ``deepseek_simaccel.backend`` when the ``sim`` backend is first
used.
"""

__version__ = "0.1.0"
