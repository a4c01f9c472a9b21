"""A keras-hub RetinaNet with a small random configuration, built directly (presets download),
for tests/targets/test_boxes.py and tests/cli/test_box_cli.py."""

from __future__ import annotations

import keras
import numpy as np
from keras_hub import models as hub_models

SIZE = 128
CLASSES = 3


def retinanet(seed: int = 0, shift: float = 0.0, class_bias: float = 0.0) -> keras.Model:
    """RetinaNet: a 4-stack basic-block ResNet (8 filters past the stem), pyramid levels 3-5, one conv
    before each head's logits; 128 x 128 input, 3 classes, boxes in keras-hub's default "yxyx".

    The box head's last kernel is scaled by 0.01 and its bias set to 0 (``shift`` on the x-centre
    and y-centre deltas), so the boxes are close to the anchors (moved ``shift`` anchor sizes right and
    down: 50 puts every box outside the image); ``class_bias`` is added to every class logit."""
    keras.utils.set_random_seed(seed)
    encoder = hub_models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[3], stackwise_num_filters=[64, 8, 8, 8],
        stackwise_num_blocks=[1, 1, 1, 1], stackwise_num_strides=[1, 2, 2, 2], block_type="basic_block",
        use_pre_activation=False, image_shape=(SIZE, SIZE, 3))
    backbone = hub_models.RetinaNetBackbone(image_encoder=encoder, min_level=3, max_level=5, use_p5=False,
                                            image_shape=(SIZE, SIZE, 3))
    model = hub_models.RetinaNetObjectDetector(backbone=backbone, num_classes=CLASSES, pre_logits_num_conv_layers=1)
    last = model.box_head.prediction_layer
    last.kernel.assign(np.asarray(last.kernel) * 0.01)
    bias = np.zeros(last.bias.shape, np.float32)
    bias[0::4] = bias[1::4] = shift  # center_xywh deltas: x and y are the first two of each anchor's four
    last.bias.assign(bias)
    cls = model.classification_head.prediction_layer
    cls.bias.assign(np.asarray(cls.bias) + class_bias)
    return model
