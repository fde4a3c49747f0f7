"""Model ports (Flax NNX). Imports nothing else of this project."""
