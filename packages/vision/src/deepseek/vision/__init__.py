"""DeepSeek vision: ``networks`` (ResNet) and ``losses`` (Dice), MONAI-style folders.

Importing ``deepseek.vision`` is cheap; import what you use from its subpackages::

    >>> from deepseek.vision.networks import resnet18
    >>> resnet18(num_classes=10).fc.out_features
    10
"""

__version__ = "0.1.0"
