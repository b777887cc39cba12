"""`python -m macsql.cli ...` (e.g. under `accelerate launch -m macsql.cli finetune ...`)."""

from macsql.cli import main

if __name__ == "__main__":
    main()
