#!/usr/bin/env python
"""Fine-tune one encoder on a mixture of text tasks with a gradient combiner (in the style of run_glue.py).

With no arguments it trains the embedded MiniLM encoder on three real tasks that install offline
(movie-review sentiment, Bible verse paraphrase pairs, party of a debate statement) and prints a
per-task metric table next to each task's majority-class baseline.

    python recipes/glue_mixture.py                                      # embedded default
    python recipes/glue_mixture.py --preset drug_reviews                # shared-input preset
    python recipes/glue_mixture.py --tasks sst2,mrpc,rte --model_name_or_path bert-base-uncased \\
        --combiner mgda --output_dir out/glue                           # GLUE from the hub (online)
    python recipes/glue_mixture.py recipes/configs/embedded_mgda.yaml  # a JSON/YAML config
    python recipes/glue_mixture.py --lora_r 8 --combiner mgda          # LoRA on the encoder (docs/adapters.md)
    accelerate launch --config_file recipes/accelerate/cpu_2proc.yaml recipes/glue_mixture.py --use_cpu True

The recipe itself lives in :mod:`hf_mtl.recipes.glue_mixture` (also run by ``hf-mtl train CONFIG``);
this script only calls its ``main``.
"""

from hf_mtl.recipes.glue_mixture import main

if __name__ == "__main__":
    main()
