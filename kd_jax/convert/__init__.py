"""Converters between PyTorch checkpoints and kd_jax: teachers in, students out.

`formats` reads and writes state dicts (`.safetensors`, torch-zip `.pth` without torch or pickle
risk); `torchvision` maps torchvision ResNet/MobileNetV2 state dicts to kd_jax variables and back.
"""
