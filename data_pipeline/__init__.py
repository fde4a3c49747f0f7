"""Video decoding, Qwen2.5-VL inputs, dataset adapters and loaders. May import `models`, never `tempr1_jax`."""
