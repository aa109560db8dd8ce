"""The table of exercises: id, place in the source, tutorial, the tests that grade it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .probes import (
    probe_dense_backward,
    probe_diffusion_loss,
    probe_kl_divergence_backward,
    probe_layernorm_backward,
    probe_reparameterize_backward,
    probe_silu_backward,
)

TUTORIALS = (
    "01_dense_and_backprop",
    "02_vae",
    "03_noise_schedules",
    "04_denoiser",
    "05_sampling",
    "06_latent_diffusion",
    "07_guidance",
    "08_gpu_and_speed",
    "09_theory",
)


@dataclass(frozen=True)
class Exercise:
    """One exercise: where its region is, which tutorial it belongs to, what grades it.

    ``tests`` are pytest node ids relative to the project root (a test
    function stands for all its parametrizations). Each is chosen to reach no
    other exercise's region, so an exercise passes as soon as its own region
    is right, whatever the state of the others. ``probe`` (gradient exercises
    only) returns the largest relative error of the gradient it computes.
    """

    id: str
    location: str  # "path/to/file.py:function" or "path:Class.method"
    tutorial: str
    tests: tuple[str, ...]
    probe: Callable[[], float] | None = None

    @property
    def path(self) -> str:
        return self.location.split(":", 1)[0]

    @property
    def function(self) -> str:
        return self.location.split(":", 1)[1]

    @property
    def kind(self) -> str:
        return "gradient" if self.probe is not None else "property"

    def grades(self, nodeid: str) -> bool:
        """Whether the pytest item ``nodeid`` is one of this exercise's tests."""
        return any(nodeid == t or nodeid.startswith((t + "[", t + "::")) for t in self.tests)


def _tests(file: str, *names: str) -> tuple[str, ...]:
    return tuple(f"tests/{file}::{name}" for name in names)


def _graded(*names: str) -> tuple[str, ...]:
    """Tests of tests/test_graded_exercises.py: first, so a failure shows their explanation."""
    return _tests("test_graded_exercises.py", *names)


# fmt: off
EXERCISES: tuple[Exercise, ...] = (
    Exercise("dense_backward", "ldm_np/layers.py:dense_backward", "01_dense_and_backprop",
             _graded("test_dense_backward_gradients") + _tests("test_layers.py", "test_dense_gradients"),
             probe_dense_backward),
    Exercise("silu_backward", "ldm_np/layers.py:silu_backward", "01_dense_and_backprop",
             _graded("test_silu_backward_gradients") + _tests("test_layers.py", "test_silu_values_and_gradient"),
             probe_silu_backward),
    Exercise("layernorm_backward", "ldm_np/layers.py:layernorm_backward", "01_dense_and_backprop",
             _graded("test_layernorm_backward_gradients")
             + _tests("test_layers.py", "test_layernorm_gradients", "test_layernorm_near_constant_rows"),
             probe_layernorm_backward),
    Exercise("reparameterize_backward", "ldm_np/vae.py:reparameterize_backward", "02_vae",
             _graded("test_reparameterize_backward_gradients")
             + _tests("test_vae.py", "test_reparameterize_forward_gradients", "test_reparameterize_keeps_dtype"),
             probe_reparameterize_backward),
    Exercise("kl_divergence_backward", "ldm_np/losses.py:kl_divergence_backward", "02_vae",
             _graded("test_kl_divergence_backward_gradients")
             + _tests("test_losses.py", "test_kl_divergence_backward", "test_kl_divergence_is_zero_for_the_prior",
                      "test_losses_keep_float32", "test_mse_and_kl_gradients_compose"),
             probe_kl_divergence_backward),
    Exercise("adam_step", "ldm_np/optim.py:Adam.step", "02_vae",
             _graded("test_adam_step_on_stored_cases", "test_adam_first_step_moves_each_parameter_by_about_lr")
             + _tests("test_optim.py", "test_l2_and_decoupled_weight_decay_differ_as_specified", "test_defaults",
                      "test_a_quadratic_is_minimised",
                      "test_state_round_trip_through_a_file_gives_identical_next_steps",
                      "test_float32_params_and_state_stay_float32")),
    Exercise("q_sample", "ldm_np/diffusion.py:q_sample", "03_noise_schedules",
             _graded("test_q_sample_on_stored_cases")
             + _tests("test_diffusion.py", "test_q_sample_int_t_equals_array_t",
                      "test_q_sample_mean_and_variance_match_the_closed_form")),
    Exercise("diffusion_loss", "ldm_np/diffusion.py:diffusion_loss", "04_denoiser",
             _graded("test_diffusion_loss_gradient", "test_diffusion_loss_on_stored_cases")
             + _tests("test_diffusion.py", "test_loss_gradient_against_finite_differences",
                      "test_min_snr_with_a_huge_gamma_is_plain_mse_for_epsilon", "test_loss_accepts_an_int_t"),
             probe_diffusion_loss),
    Exercise("ddpm_posterior_mean", "ldm_np/samplers.py:_ddpm_update", "05_sampling",
             _graded("test_ddpm_posterior_mean_on_stored_cases")
             + _tests("test_samplers.py", "test_ddpm_adds_no_noise_at_t_zero", "test_ddpm_clip_sample")),
    Exercise("ddim_step", "ldm_np/samplers.py:_ddim_update", "05_sampling",
             _graded("test_ddim_step_on_stored_cases")
             + _tests("test_samplers.py", "test_ddim_eta_zero_is_deterministic",
                      "test_ddim_per_row_timesteps_equal_per_row_calls",
                      "test_ddim_gives_the_same_step_for_every_prediction_type")),
    Exercise("latent_scale_factor", "ldm_np/pipeline.py:latent_scale_factor", "06_latent_diffusion",
             _graded("test_latent_scale_factor_on_stored_cases", "test_latent_scale_factor_gives_unit_variance")),
    Exercise("guide", "ldm_np/guidance.py:guide", "07_guidance",
             _graded("test_guide_on_stored_cases", "test_guide_at_w_0_and_1_is_each_prediction",
                     "test_guide_keeps_float32")),
    Exercise("rescale_guidance", "ldm_np/guidance.py:rescale_guidance", "07_guidance",
             _graded("test_rescale_guidance_on_stored_cases", "test_rescale_guidance_limits")),
)
# fmt: on

BY_ID = {ex.id: ex for ex in EXERCISES}


def stub_line(exercise_id: str, indent: str = "") -> str:
    """The line that replaces a region in the student copy."""
    return f'{indent}raise NotImplementedError("exercise {exercise_id}")'


# Tests of the reference project that state a solution (an independent implementation of a
# formula, or a planted bug that is the solution with one term changed): they prove the
# reference right, but a student copy must not ship them. ``build`` removes these top-level
# functions from the copy, and every function that uses one of them.
ANSWER_BEARING_TESTS: dict[str, tuple[str, ...]] = {
    "tests/test_optim.py": (
        "reference_adam",
        "test_adam_first_two_steps_by_hand",
        "test_adam_and_adamw_match_the_reference_over_several_steps",
    ),
    "tests/test_diffusion.py": (
        "test_q_sample_on_hand_made_arrays",
        "test_loss_value_matches_the_definition",
    ),
    "tests/test_samplers.py": (
        "test_ddpm_step_on_hand_made_arrays",
        "test_posterior_mean_from_x0_hat_equals_the_eps_form",
        "test_ddim_step_on_hand_made_arrays",
        "test_ddim_clipping_recomputes_eps_from_the_clipped_x0",
    ),
    "tests/test_gradcheck.py": (
        "dense_backward_no_transpose",
        "dense_backward_transposed_dkernel",
        "dense_backward_forgets_bias",
        "test_planted_layernorm_bug_is_caught",
    ),
}
