"""The built-in search spaces. Each states only what differs; budgets are per preset.

Presets: `smoke` (a look within ~2 minutes on a laptop CPU), `cpu` (a real small study in at most
~15 minutes on a 2-core machine), `gpu` (the paper's model sizes and budgets).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from search_spaces._base import Budget, Categorical, Float, SearchSpace, register_space
from trainers.modes import MODES

# The released joint-mode config (separate agent, two optimizers): cls 1, kd 1, hint 10.
JOINT_WEIGHTS = {"cls_vit": 1.0, "cls_agent": 1.0, "kd_vit": 1.0, "kd_agent": 1.0, "hint": 10.0}

# CPU presets cap evaluation images: validation accuracy on 2,000 images has a standard error of
# ~0.6 points near 90%, ample for ranking trials, and costs a third of evaluating all 6,000.
CPU_EVAL = {"max_eval_images": 2000}


def budgets(
    trials: tuple[int, int, int],
    *,
    final_seeds: tuple[int, int] = (0, 3),
    data_fraction: float | None = None,
    smoke_arms: dict | None = None,
    cpu_arms: dict | None = None,
) -> dict[str, Budget]:
    """The three presets' budgets; a space states only its trial counts and what it restricts.

    trials: trials per arm for (smoke, cpu, gpu); final_seeds: for (cpu, gpu); data_fraction: the
    fraction every trial trains on when it is not an arm factor (gpu: 2x the CPU presets').
    """
    fraction = {"data_fraction": data_fraction} if data_fraction is not None else {}
    smoke_fraction = {"data_fraction": 0.02} if data_fraction is not None else {}
    gpu_fraction = {"data_fraction": min(1.0, 2 * data_fraction)} if data_fraction else {}
    return {
        "smoke": Budget(
            trials_per_arm=trials[0],
            epochs=2,
            grace_epochs=1,
            arms=smoke_arms or {},
            overrides={**smoke_fraction, "max_eval_images": 1000},
        ),
        "cpu": Budget(
            trials_per_arm=trials[1],
            epochs=6,
            grace_epochs=2,
            final_seeds=final_seeds[0],
            arms=cpu_arms or {},
            overrides={**fraction, **CPU_EVAL},
        ),
        "gpu": Budget(
            trials_per_arm=trials[2],
            epochs=100,
            grace_epochs=10,
            reduction_factor=3,
            final_seeds=final_seeds[1],
            model_preset="vit_s",
            overrides=gpu_fraction,
        ),
    }


def per_mode_weights(factors: dict[str, Any]) -> dict[str, Any]:
    return dict(JOINT_WEIGHTS) if factors.get("mode") == "joint" else {}


LR = Float("lr", 2e-4, 3e-3, log=True)  # around the paper's 1e-3
WEIGHT_DECAY = Float("weight_decay", 1e-3, 0.2, log=True)  # around the paper's 0.05


@register_space
def data_fraction() -> SearchSpace:
    return SearchSpace(
        name="data_fraction",
        description="every registered mode (vit, agent, shared, joint) x data fraction (Table 3)",
        arms={
            "mode": tuple(MODES),  # every registered mode, in registration order
            "data_fraction": (0.01, 0.05, 0.1, 0.25, 0.5, 1.0),
        },
        search=(LR, WEIGHT_DECAY),
        arm_overrides=per_mode_weights,
        baseline={"mode": "vit"},
        main_view="fraction_curve",
        budgets=budgets(
            (2, 3, 8),
            final_seeds=(2, 3),
            smoke_arms={"data_fraction": (0.02,)},
            cpu_arms={"data_fraction": (0.01, 0.05)},
        ),
    )


@register_space
def loss_weights() -> SearchSpace:
    # Hint options only matter when there is a hint: define-by-run conditions.
    has_hint = lambda p: p["hint"] > 0  # noqa: E731
    return SearchSpace(
        name="loss_weights",
        description="shared mode: CE, KD and feature-hint weights, KD temperature, hint variants",
        arms={"mode": ("shared",)},
        search=(
            Float("cls_vit", 0.1, 1.0),
            Float("cls_agent", 0.1, 1.0),
            Float("kd_vit", 0.0, 2.0),
            Float("kd_agent", 0.0, 2.0),
            Float("kd_temp", 1.0, 8.0),
            Categorical("hint", (0.0, 1.0, 2.5, 5.0, 10.0, 20.0)),  # paper Table 4 varies beta
            Categorical("hint_distance", ("ln_mse", "l2_mse"), when=has_hint),
            Categorical("hint_decay", ("linear", "none"), when=has_hint),
            Categorical(
                "hint_layers",
                ("all", "first", "first_two"),
                values={"all": None, "first": (0,), "first_two": (0, 1)},
                when=has_hint,
            ),
            Categorical("grad_align", ("none", "pcgrad")),
        ),
        budgets=budgets((4, 16, 64), data_fraction=0.05),
    )


@register_space
def agent_design() -> SearchSpace:
    return SearchSpace(
        name="agent_design",
        description="shared mode: agent stem x downsampling x norm placement x feature resampling",
        arms={
            "agent_design": ("base", "res_like"),
            "agent_stem": ("vit_like", "resnet_like"),
            "agent_norm": ("pre", "post"),
            "resample": ("avgpool1d", "interp2d"),
        },
        search=(LR, WEIGHT_DECAY, Float("hint", 1.0, 20.0, log=True)),
        fixed={"mode": "shared"},
        baseline={"agent_design": "base", "agent_stem": "vit_like"},
        budgets=budgets(
            (1, 3, 8),
            final_seeds=(0, 3),
            data_fraction=0.05,
            smoke_arms={"agent_norm": ("pre",), "resample": ("avgpool1d",)},
            cpu_arms={"agent_norm": ("pre",)},
        ),
    )


@register_space
def optimizer() -> SearchSpace:
    return SearchSpace(
        name="optimizer",
        description="vit vs shared: lr, weight decay, warmup, batch size, smoothing, clipping",
        arms={"mode": ("vit", "shared")},
        search=(
            LR,
            WEIGHT_DECAY,
            Float("warmup_epochs", 0.0, 2.0),
            Categorical("batch_size", (32, 64, 128)),
            Float("label_smoothing", 0.0, 0.2),
            Categorical("clip_grad", (0.0, 1.0, 5.0)),
        ),
        baseline={"mode": "vit"},
        budgets=budgets((2, 8, 32), data_fraction=0.05),
    )


# --- the sibling methods (README "Sibling methods") ---------------------------------------------

# Each method is a bundle of TrainConfig values, compared as one arm factor `method`.
METHODS = {
    "vit": {"mode": "vit"},  # from scratch, timm init: the baseline
    "shared": {"mode": "shared"},  # bootstrapping (Zhang et al. 2022)
    "impulse_vit": {"mode": "vit", "init": "impulse", "pool": "gap"},  # Zheng et al. 2024
    "dhvt_vit": {"mode": "vit", "patch_embed": "sope", "mlp": "daff", "head_tokens": True},
    "ssl_vit": {"mode": "vit", "ssl_init": "dino"},  # Gani et al. 2022
    "impulse_shared": {"mode": "shared", "init": "impulse", "pool": "gap"},  # both biases at once
}
# The DINO phase's length per preset: it is part of each ssl_vit trial's cost (reported apart).
SSL_EPOCHS = {"smoke": 1, "cpu": 4, "gpu": 100}


def with_ssl_epochs(preset: str) -> dict[str, Any]:
    return {"ssl_epochs": SSL_EPOCHS[preset]}


@register_space
def methods() -> SearchSpace:
    # cpu: one fraction, so six methods x (2 searched + 2 final runs) fit ~15 min on 2 cores
    built = budgets(
        (1, 2, 8),
        final_seeds=(2, 3),
        smoke_arms={"data_fraction": (0.02,)},
        cpu_arms={"data_fraction": (0.02,)},
    )
    for preset, budget in built.items():  # the DINO phase's length is the preset's too
        built[preset] = dataclasses.replace(
            budget, overrides={**budget.overrides, **with_ssl_epochs(preset)}
        )
    return SearchSpace(
        name="methods",
        description="vit / bootstrapping / impulse init / DHVT / DINO init / bootstrapping+impulse "
        "across data fractions, equal tuning budget per method",
        arms={"method": tuple(METHODS), "data_fraction": (0.01, 0.05, 0.1, 0.25, 0.5, 1.0)},
        bundles={"method": METHODS},
        search=(LR, WEIGHT_DECAY),
        baseline={"method": "vit"},
        budgets=built,
    )


@register_space
def init_scheme() -> SearchSpace:
    return SearchSpace(
        name="init_scheme",
        description="ViT attention init: timm trunc-normal / mimetic / impulse (3x3, 5x5), "
        "global-average pooled, across data fractions",
        arms={
            "init": ("trunc_normal", "mimetic", "impulse"),
            "data_fraction": (0.01, 0.05, 0.1, 0.25, 0.5, 1.0),
        },
        search=(LR, WEIGHT_DECAY),
        fixed={"mode": "vit", "pool": "gap"},  # one pooling for all three: only the init differs
        baseline={"init": "trunc_normal"},
        budgets=budgets(
            (1, 3, 8),
            final_seeds=(0, 3),
            smoke_arms={"data_fraction": (0.02,)},
            cpu_arms={"data_fraction": (0.05,)},
        ),
    )


# DHVT's pieces one at a time and together (Lu et al. 2022, Table 5's ablation on our ViT)
DHVT_PIECES = {
    "vit": {},
    "sope": {"patch_embed": "sope"},
    "daff": {"mlp": "daff"},
    "head_tokens": {"head_tokens": True},
    "dhvt": {"patch_embed": "sope", "mlp": "daff", "head_tokens": True},
}


@register_space
def architecture() -> SearchSpace:
    return SearchSpace(
        name="architecture",
        description="DHVT pieces on the ViT: SOPE, DAFF, head tokens, one at a time and together",
        arms={"blocks": tuple(DHVT_PIECES)},
        bundles={"blocks": DHVT_PIECES},
        search=(LR, WEIGHT_DECAY),
        fixed={"mode": "vit"},
        baseline={"blocks": "vit"},
        budgets=budgets((1, 3, 8), final_seeds=(0, 3), data_fraction=0.05),
    )
