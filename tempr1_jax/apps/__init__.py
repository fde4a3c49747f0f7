"""The applications built on the training core and RL: SFT, evaluation and its reports, curation, the
memory planner and the demo. The commands in `tempr1_jax.commands` are thin layers over these."""
