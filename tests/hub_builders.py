"""keras-hub image classifiers with small random configurations, built directly (never
``from_preset`` with a name: presets download), for tests/models/test_hub.py and
tests/cli/test_hub_cli.py."""

from __future__ import annotations

import keras
import keras_hub
from keras_hub import layers as hub_layers
from keras_hub import models as hub_models

SIZE = 32
CLASSES = 5
#: ImageNet mean / std as keras-hub's DeiT and ResNet converters carry them: x * scale + offset
IMAGENET_SCALE = [1 / (255 * 0.229), 1 / (255 * 0.224), 1 / (255 * 0.225)]
IMAGENET_OFFSET = [-0.485 / 0.229, -0.456 / 0.224, -0.406 / 0.225]


def vit(seed: int = 0, pooling: str = "token", intermediate_dim: int | None = None) -> keras.Model:
    """ViT: 32 x 32 input, patch 8 (a 4 x 4 grid + the class token), 2 blocks, width 16;
    converter x / 127.5 - 1 (keras-hub's ViT presets)."""
    keras.utils.set_random_seed(seed)
    backbone = hub_models.ViTBackbone(image_shape=(SIZE, SIZE, 3), patch_size=8, num_layers=2, num_heads=2,
                                      hidden_dim=16, mlp_dim=32)
    converter = hub_layers.ViTImageConverter(image_size=(SIZE, SIZE), scale=1 / 127.5, offset=-1.0)
    preprocessor = hub_models.ViTImageClassifierPreprocessor(image_converter=converter)
    return hub_models.ViTImageClassifier(backbone=backbone, num_classes=CLASSES, preprocessor=preprocessor,
                                         pooling=pooling, intermediate_dim=intermediate_dim)


def deit(seed: int = 0) -> keras.Model:
    """DeiT: as :func:`vit` plus the distillation token; per-channel ImageNet converter."""
    keras.utils.set_random_seed(seed)
    backbone = hub_models.DeiTBackbone(image_shape=(SIZE, SIZE, 3), patch_size=8, num_layers=2, num_heads=2,
                                       hidden_dim=16, intermediate_dim=32)
    converter = hub_layers.DeiTImageConverter(image_size=(SIZE, SIZE), scale=IMAGENET_SCALE, offset=IMAGENET_OFFSET)
    preprocessor = hub_models.DeiTImageClassifierPreprocessor(image_converter=converter)
    return hub_models.DeiTImageClassifier(backbone=backbone, num_classes=CLASSES, preprocessor=preprocessor)


def swin(seed: int = 0) -> keras.Model:
    """Swin: patch 4, two stages (8 x 8 then 4 x 4 tokens), window 4; ImageNet converter."""
    keras.utils.set_random_seed(seed)
    backbone = hub_models.SwinTransformerBackbone(image_shape=(SIZE, SIZE, 3), patch_size=4, embed_dim=16,
                                                  depths=[2, 2], num_heads=[2, 2], window_size=4, mlp_ratio=2.0)
    converter = hub_layers.SwinTransformerImageConverter(image_size=(SIZE, SIZE), scale=IMAGENET_SCALE,
                                                         offset=IMAGENET_OFFSET)
    preprocessor = hub_models.SwinTransformerImageClassifierPreprocessor(image_converter=converter)
    return hub_models.SwinTransformerImageClassifier(backbone=backbone, num_classes=CLASSES, preprocessor=preprocessor)


def resnet(seed: int = 0) -> keras.Model:
    """ResNet (basic blocks, 2 stacks; keras-hub wants 64 filters first): an 8 x 8 -> 4 x 4
    feature map; ImageNet converter."""
    keras.utils.set_random_seed(seed)
    backbone = hub_models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[3], stackwise_num_filters=[64, 16],
        stackwise_num_blocks=[1, 1], stackwise_num_strides=[1, 2], block_type="basic_block",
        use_pre_activation=False, image_shape=(SIZE, SIZE, 3),
    )
    converter = hub_layers.ResNetImageConverter(image_size=(SIZE, SIZE), scale=IMAGENET_SCALE, offset=IMAGENET_OFFSET)
    preprocessor = hub_models.ResNetImageClassifierPreprocessor(image_converter=converter)
    return hub_models.ResNetImageClassifier(backbone=backbone, num_classes=CLASSES, preprocessor=preprocessor)


def efficientnet(seed: int = 0) -> keras.Model:
    """EfficientNet (2 MBConv stages, width x 0.25), any input size; converter x / 255."""
    keras.utils.set_random_seed(seed)
    backbone = hub_models.EfficientNetBackbone(
        width_coefficient=0.25, depth_coefficient=0.2, stackwise_kernel_sizes=[3, 3], stackwise_num_repeats=[1, 1],
        stackwise_input_filters=[32, 16], stackwise_output_filters=[16, 24], stackwise_expansion_ratios=[1, 6],
        stackwise_strides=[1, 2], stackwise_squeeze_and_excite_ratios=[0.25, 0.25],
        stackwise_block_types=["v1", "v1"], image_shape=(None, None, 3),
    )
    converter = hub_layers.EfficientNetImageConverter(image_size=(SIZE, SIZE), scale=1 / 255.0)
    preprocessor = hub_models.EfficientNetImageClassifierPreprocessor(image_converter=converter)
    return hub_models.EfficientNetImageClassifier(backbone=backbone, num_classes=CLASSES, preprocessor=preprocessor)


def densenet(seed: int = 0) -> keras.Model:
    """DenseNet: two dense stacks of one block each; no converter."""
    keras.utils.set_random_seed(seed)
    backbone = hub_models.DenseNetBackbone(stackwise_num_repeats=[1, 1], image_shape=(SIZE, SIZE, 3))
    return hub_models.DenseNetImageClassifier(backbone=backbone, num_classes=CLASSES)


def mit(seed: int = 0) -> keras.Model:
    """MiT (SegFormer's encoder): two levels, widths 8 and 16; no converter."""
    keras.utils.set_random_seed(seed)
    backbone = hub_models.MiTBackbone(
        layerwise_depths=[1, 1], num_layers=2, layerwise_num_heads=[1, 2], layerwise_sr_ratios=[2, 1],
        max_drop_path_rate=0.0, layerwise_patch_sizes=[7, 3], layerwise_strides=[4, 2], hidden_dims=[8, 16],
        image_shape=(SIZE, SIZE, 3),
    )
    return hub_models.MiTImageClassifier(backbone=backbone, num_classes=CLASSES)


def vgg(seed: int = 0) -> keras.Model:
    """VGG: two conv blocks; keras-hub's head (fc1, fc2 as convolutions, then pooling), 32 wide."""
    keras.utils.set_random_seed(seed)
    backbone = hub_models.VGGBackbone(stackwise_num_repeats=[1, 1], stackwise_num_filters=[8, 16],
                                      image_shape=(SIZE, SIZE, 3))
    return hub_models.VGGImageClassifier(backbone=backbone, num_classes=CLASSES, pooling_hidden_dim=32)


def xception(seed: int = 0) -> keras.Model:
    """Xception: two separable-conv stacks, widths 8-16 and 16."""
    keras.utils.set_random_seed(seed)
    backbone = hub_models.XceptionBackbone(stackwise_conv_filters=[[8, 16], [16, 16]], stackwise_pooling=[True, False],
                                           image_shape=(SIZE, SIZE, 3))
    return hub_models.XceptionImageClassifier(backbone=backbone, num_classes=CLASSES)


BUILDERS = {"vit": vit, "deit": deit, "swin": swin, "resnet": resnet, "efficientnet": efficientnet,
            "densenet": densenet, "mit": mit, "vgg": vgg, "xception": xception}
#: families whose explanation needs token layers, (B, T, C) -> (B, h, w, C) grids (branch vit23)
TOKEN_FAMILIES = ("vit", "deit", "swin")

__all__ = ["BUILDERS", "CLASSES", "SIZE", "TOKEN_FAMILIES", "keras_hub"]
