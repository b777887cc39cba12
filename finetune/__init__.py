"""Training the agents: agent datasets (`data`), the training configs (`config`), the one training setup
(`training`), SFT/LoRA (`sft`), GRPO with execution rewards (`grpo`, `rewards`), DPO against hallucinated
schema (`dpo`), loss plots (`plots`) and their CLI (`commands`).

Heavy libraries (torch, transformers, trl, peft) are imported inside functions.
"""
