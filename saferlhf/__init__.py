"""saferlhf: Safe RLHF (Dai et al., ICLR 2024) on Hugging Face models.

Reward model (helpfulness) + cost model (harmfulness, cost > 0 means unsafe) + PPO-Lagrangian.
`import saferlhf` stays light: heavy modules are imported by the code that needs them.
"""

__version__ = "0.1.0"
