import sys, transformers as tf
path = sys.argv[1]
backbone = tf.Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                           image_size=56, patch_size=14, out_features=["stage1", "stage2", "stage3", "stage4"],
                           reshape_hidden_states=False)
config = tf.DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=32, neck_hidden_sizes=[8, 16, 16, 16],
                                fusion_hidden_size=16, head_hidden_size=8, patch_size=14)
tf.DepthAnythingForDepthEstimation(config).save_pretrained(path)
tf.DPTImageProcessor(size={"height": 518, "width": 518}, keep_aspect_ratio=True, ensure_multiple_of=14).save_pretrained(path)
