"""The training core shared by SFT and GRPO: run set-up from gin (mesh, model, data), batches on the mesh,
the jitted update, checkpoints, metrics, export, greedy predictions, multi-host collectives and the loop."""
