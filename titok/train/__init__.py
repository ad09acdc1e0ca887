"""Training recipes (one module each) and the pieces they share: recipe configs, optimizer and LR schedule,
EMA, atomic checkpoints with exact resume, metrics logging and the runtime (accelerate, devices, data order)."""
