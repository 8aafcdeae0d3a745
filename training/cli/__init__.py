"""The training console scripts, one module each: corel-train, corel-synth, corel-augment, corel-plot."""
