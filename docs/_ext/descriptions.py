"""Descriptions of output names that carry no ``long_name`` in the files.

The output reference prefers the file's own ``long_name`` (and ``comment``).
A name without one is described here.  The build fails (warning under -W)
when a name in a file has neither, and when a name below no longer occurs in
any file, so this table cannot go stale either.  When a ``long_name`` is added
in the code, the entry here becomes unused and the build says so: delete it.
"""

# dimensions and coordinates
COORDS = {
    "step": "GD step of a recorded state (0 = initialisation)",
    "j": "class of a filter bank: +1 or -1",
    "r": "filter index within a class, 0..m-1",
    "i": "training sample index, 0..n-1",
    "p": "patch: 1 = signal patch, 2 = noise patch (general level: 1..P)",
    "k": "depth >= 2: neuron of the next hidden layer; general level: basis vector "
         "of the patch span",
    "hidden_layer": "hidden layer 1..L",
    "block": "parameter block: W, U1..U{L-1}, v",
    "layer": "upper layer U(layer), 1..L-1",
    "model": "'reduced' (the level run) or 'full' (the weight-space network)",
    "variable": "compared variable (gamma, rho, v, loss, balance; U at depth >= 2; "
                "pre, v, loss on the general level)",
    "metric_step": "step of the per-step metrics",
    "v0": "initial output weight v0 of this boundary (one per --v0)",
    "tau": "test-error threshold: the headline tau, then the transition crossings "
           "0.1 and 0.4",
    "seed": "replicate: the seed of dyn simulate --seed (solve: seed + k); phase: "
            "replicate index (the realisation's seed is point_seed)",
    "d_grid": "input dimension d of the scaling fit (--d-grid)",
    "n_grid": "training samples n of the scaling fit (--n-grid)",
    "eval": "evaluation of the boundary search (one ||mu|| per entry, NaN padded)",
    "point": "verification point: mu*/2, mu*, 2mu*",
    "verify_seed": "seed of a verification run (sampler data)",
    "status_field": "status components: step of divergence, reason code",
    "mu": "phase axis ||mu|| (any --x/--y axis name appears as its own coordinate)",
}

# variables without a long_name in the file
VARIABLES = {
    # solve.nc
    "mu_star_lo": "lower end of the 95% bootstrap interval of mu_star (over seeds)",
    "mu_star_hi": "upper end of the 95% bootstrap interval of mu_star",
    "loss_at_mu_star": "seed-mean training loss at mu_star (was the data fitted?)",
    "train_error_at_mu_star": "largest training error over seeds at mu_star",
    "fitted": "1 when every seed fits its training data (train error 0); phase: per "
              "point and time",
    "curve_mu": "every ||mu|| the boundary search evaluated (ascending, NaN padded)",
    "curve_test_error": "clean test error per seed at each evaluated ||mu||",
    "curve_loss": "training loss per seed at each evaluated ||mu||",
    "wall_time": "seconds spent (solve: per v0; compare: per model)",
    "mu_star_d": "mu* at each d of the d grid",
    "mu_star_d_lo": "lower end of the interval of mu_star_d",
    "mu_star_d_hi": "upper end of the interval of mu_star_d",
    "fitted_d": "fitted flag of each d-grid boundary",
    "mu_star_n": "mu* at each n of the n grid",
    "mu_star_n_lo": "lower end of the interval of mu_star_n",
    "mu_star_n_hi": "upper end of the interval of mu_star_n",
    "fitted_n": "fitted flag of each n-grid boundary",
    "exponent_a": "least-squares exponent a of mu* ~ d^a n^b",
    "exponent_b": "least-squares exponent b of mu* ~ d^a n^b",
    "exponent_a_lo": "lower end of the interval of exponent_a",
    "exponent_a_hi": "upper end of the interval of exponent_a",
    "exponent_b_lo": "lower end of the interval of exponent_b",
    "exponent_b_hi": "upper end of the interval of exponent_b",
    "fit_rms_log": "rms residual of the fit in log mu*",
    "mu_star_t_lo": "lower end of the interval of mu_star_t",
    "mu_star_t_hi": "upper end of the interval of mu_star_t",
    "n_diverged_t": "runs that diverged before each training time (counted as chance)",
    "verify_mu": "||mu|| of each verification point",
    "test_error_reduced": "clean test error of the reduced level (verification / compare)",
    "test_error_full": "clean test error of the weight-space network on the same data",
    "activation_agreement_min": "smallest fraction of agreeing activation patterns "
                                "1[z > 0] over steps",
    "v_sign_agreement_min": "smallest fraction of agreeing signs of v over steps",
    "max_rel_err": "largest relative error reduced vs full over steps, per variable",
    # compare.nc metrics (compare.metrics.discrepancy_fields)
    "rel_err_per_step": "relative error max|a_t - b_t| / max|b_t| per variable and step "
                        "(b the network)",
    "median_rel_err": "median over steps of the relative error, per variable",
    "first_step_above_tol": "first step whose relative error exceeds --tol (-1: never)",
    "activation_agreement": "fraction of agreeing noise activation patterns 1[z > 0]",
    "signal_activation_agreement": "fraction of agreeing signal activation patterns "
                                   "1[s > 0]",
    "v_sign_agreement": "fraction of agreeing signs of v",
    "loss_diff_final": "final training loss, reduced minus full",
    "test_error_diff": "clean test error, reduced minus full",
    # phase.nc
    "test_error_mean": "seed-mean clean test error (diverged runs count as chance, 0.5)",
    "loss_mean": "seed-mean training loss",
    "n_diverged": "runs of the point that diverged before this time",
}

# global attributes that are not model parameters (those are described by PARAMS)
ATTRS = {
    "Conventions": "CF conventions version",
    "title": "what the file holds",
    "source": "the dyn version that wrote it",
    "history": "creation time and program",
    "created": "creation time (UTC, ISO 8601)",
    "dyn_version": "package version",
    "params_json": "every parameter as JSON; Params.from_attrs(ds.attrs) reads it back",
    "level": "model level (exact, orthogonal, fixed-output, general, full)",
    "sampler": "statistics sampler (data or wishart)",
    "wall_time": "seconds of the run",
    "data_source": "general level: 'model' or the --data file",
    "swept_parameters": "parameters that vary along a dimension (their flat attribute "
                        "is left out)",
    "unused_parameters": "parameters without effect (e.g. replaced by a data file)",
    "n_seeds": "seeds per point",
    "threshold": "headline test-error threshold tau",
    "verify_sampler": "sampler of the verification runs (data)",
    "x_axis": "first phase axis (rows)",
    "y_axis": "second phase axis (columns)",
    "n_diverged": "runs that diverged in the whole sweep",
    "mu_star_not_reported": "mu* points left NaN because diverged runs made the crossing",
    "precision": "float64 or float32 (dyn phase --precision)",
    "fingerprint": "hash of the sweep's spec (resume / refuse)",
    "spec_json": "the sweep's spec as JSON",
    "integrator": "gd, or flow (the normalised gradient flow to --times)",
    "times": "the --times of the run (GD steps; inf: the certified limit)",
    "tol": "dyn compare --tol: relative-error tolerance of 'first step above'",
    "n_budget": "runs that spent the normalised flow's step budget (not divergences)",
    "n_zero_output": "runs (each time apart) whose outputs are all exactly 0 (loss log 2, "
                     "errors 1/2 as ties): an underflow",
}

# names that only some runs write (not in the toy runs of the reference): not
# checked for staleness
OPTIONAL = {"unused_parameters", "times", "tol", "n_budget"}
