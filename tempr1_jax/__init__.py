"""tempr1-jax: TempR1 multi-task temporal GRPO for Qwen2.5-VL in JAX."""
