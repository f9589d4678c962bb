"""Seaborn figures of the paper's views, from the frames of `pipeline.results.analysis`.

Every function takes tidy frames and returns a matplotlib Figure; lines are the mean
over seeds with the min-max band across seeds, and legends carry the seed count.
"""

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

BAND = ("pi", 100)  # seaborn errorbar: the full range over seeds


def with_seed_counts(frame):
    """Variant labels with their count of runs, e.g. 'BN (n=3)' (a variant trained for
    two lengths has two runs a seed: n counts runs, what its line averages over)."""
    column = "run" if "run" in frame else "seed"
    counts = frame.groupby("variant")[column].nunique()
    return frame.assign(variant=frame["variant"].map(lambda v: f"{v} (n={counts[v]})"))


def _lines(ax, frame, y, title, ylabel, logy=False, hue="variant", palette=None):
    # Sorted hue order, so a variant has the same colour (C0, C1, ...) in every panel.
    order = sorted(palette) if palette else sorted(frame[hue].unique())
    sns.lineplot(data=frame, x="step", y=y, hue=hue, errorbar=BAND, ax=ax, hue_order=order,
                 palette=palette or [f"C{i}" for i in range(len(order))])
    ax.set(title=title, xlabel="training step", ylabel=ylabel)
    _untitled_legend(ax)
    if logy:
        ax.set_yscale("log")


def _untitled_legend(ax):
    """Legends list variants; their title would be a frame's column name."""
    if ax.get_legend() is not None:
        ax.get_legend().set_title(None)


def per_learning_rate(frame, labels=None):
    """([(lr, rows)] in increasing LR, palette). Rows get a `name` column, the norm's
    name with its count of runs and how many of them diverged (the LR is the panel's);
    the palette gives a norm one colour in every panel. `labels` ({(lr, norm): name},
    from another frame's call) names the rows the same way: a diverged run may have
    training records but no evaluation."""
    from pipeline.results.analysis import NORM_NAMES
    if labels is None:
        labels = {}
        for (lr, norm), rows in frame.groupby(["lr", "norm"]):
            runs = rows.groupby("run" if "run" in rows else "seed")["status"].first()
            diverged = int((runs == "diverged").sum())
            labels[(lr, norm)] = (f"{NORM_NAMES.get(norm, norm)} (n={len(runs)}"
                                  + (f", {diverged} diverged" if diverged else "") + ")")
    from pipeline.results.analysis import NORM_COLORS
    frame = frame.assign(name=[labels[(lr, n)] for lr, n in zip(frame["lr"], frame["norm"])])
    palette = {label: NORM_COLORS.get(norm, "C9") for (lr, norm), label in labels.items()}
    grouped = list(frame.groupby("lr", sort=True))
    return grouped, palette, labels


def plot_training(train, evals, metric="accuracy"):
    """Mini-batch training and test `metric` ('accuracy' or 'loss') over steps, one row
    of panels per learning rate (Fig 1a, 2a)."""
    train_by_lr, palette, labels = per_learning_rate(train)
    evals_by_lr = dict(per_learning_rate(evals, labels)[0])
    fig, axes = plt.subplots(len(train_by_lr), 2, figsize=(11, 4 * len(train_by_lr)),
                             squeeze=False, constrained_layout=True)
    logy = metric == "loss"
    for row, (lr, rows) in zip(axes, train_by_lr):
        names = {k: v for k, v in palette.items() if k in set(rows["name"])}
        _lines(row[0], rows, f"train/{metric}", f"LR {lr:g}: training {metric} (mini-batch)",
               metric, logy, hue="name", palette=names)
        if lr in evals_by_lr:
            _lines(row[1], evals_by_lr[lr], f"test/{metric}", f"LR {lr:g}: test {metric}",
                   metric, logy, hue="name", palette=names)
    return fig


def plot_loss(train, title, logy=False):
    """Training loss over steps, one line per variant."""
    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    _lines(ax, with_seed_counts(train), "train/loss", title, "loss", logy)
    return fig


def plot_activation_violins(distributions, layer, max_steps=6):
    """Violins of the sampled raw activations of layer #`layer` at up to `max_steps`
    evenly spaced probe steps, one row per variant (Fig 1c, 2b, 6). `distributions`:
    `analysis.probe_frame(runs, "distributions")`."""
    column = "distributions/sample"
    distributions = distributions[distributions["distributions/layer"] == layer]
    variants = sorted(distributions["variant"].unique())
    steps = np.unique(distributions["step"])
    chosen = steps[np.linspace(0, len(steps) - 1, min(max_steps, len(steps))).round().astype(int)]
    fig, axes = plt.subplots(len(variants), 1, figsize=(10, 2.6 * len(variants)), sharex=True,
                             squeeze=False, constrained_layout=True)
    for ax, variant in zip(axes[:, 0], variants):
        rows = distributions[(distributions["variant"] == variant)
                             & distributions["step"].isin(chosen)]
        # explode repeats each row's index label; seaborn needs unique labels.
        long = rows[["step", column]].explode(column, ignore_index=True).astype({column: float})
        sns.violinplot(data=long, x="step", y=column, ax=ax, cut=0, inner="quartile",
                       density_norm="width", color="C0")
        ax.set(title=f"{variant}: layer #{layer} activations", ylabel="activation", xlabel="")
    axes[-1, 0].set_xlabel("training step")
    return fig


def plot_ics(ics):
    """||G - G'|| (log axis) and cos(G, G') over training: one row of panels per probed
    layer and metric, one column per learning rate (Fig 3); diverged runs left out.
    `ics`: `analysis.probe_frame(runs, "ics")`."""
    ics = ics[ics["status"] != "diverged"]
    layers = sorted(ics["ics/layer"].astype(int).unique())
    by_lr, palette, _ = per_learning_rate(ics)
    metrics = [("ics/l2", "||G - G'||", True), ("ics/cosine", "cos(G, G')", False)]
    fig, axes = plt.subplots(2 * len(layers), len(by_lr), squeeze=False, constrained_layout=True,
                             figsize=(5.5 * len(by_lr), 3.2 * 2 * len(layers)))
    for column, (lr, frame) in enumerate(by_lr):
        names = {k: v for k, v in palette.items() if k in set(frame["name"])}
        for index, layer in enumerate(layers):
            rows = frame[frame["ics/layer"] == layer]
            for offset, (y, label, logy) in enumerate(metrics):
                _lines(axes[2 * index + offset, column], rows, y,
                       f"LR {lr:g}, layer #{layer}: {label}", label, logy, hue="name",
                       palette=names)
    return fig


def plot_versus_loss(frame, y, loss, title, ylabel, logy=True):
    """A probe statistic against the training loss of its own step (log x, decreasing:
    training goes left to right), one point per record, one colour per variant, one
    panel per learning rate: the comparison the claims make at matched progress, drawn.
    Records of the initial transient (the first 5 % of a run's steps, which the claims
    leave out: PROTOCOL.md section 8) are drawn as hollow circles."""
    from pipeline.results.measures import TRANSIENT
    frame = frame[(frame["status"] != "diverged") & (frame["step"] > 0)]
    by_lr, palette, _ = per_learning_rate(frame)
    fig, axes = plt.subplots(1, len(by_lr), figsize=(5.5 * len(by_lr), 4), squeeze=False,
                             constrained_layout=True)
    for ax, (lr, rows) in zip(axes[0], by_lr):
        names = sorted(set(rows["name"]))
        early = rows["step"] < TRANSIENT * rows["run_steps"]
        if not early.all():
            sns.scatterplot(data=rows[~early], x=loss, y=y, hue="name", hue_order=names, s=14,
                            alpha=0.7, palette={n: palette[n] for n in names}, ax=ax,
                            linewidth=0)
        for name, points in rows[early].groupby("name"):
            ax.scatter(points[loss], points[y], s=14, facecolors="none",
                       edgecolors=palette[name], linewidths=0.8)
        if early.any():
            ax.scatter([], [], s=14, facecolors="none", edgecolors="grey",
                       label="initial transient (not compared)")
            ax.legend()
        ax.set(xscale="log", title=f"LR {lr:g}: {title}", xlabel="training loss at the probe step",
               ylabel=ylabel)
        ax.invert_xaxis()
        _untitled_legend(ax)
        if logy:
            ax.set_yscale("log")
    return fig


def plot_landscape(landscape, logy=False, beta=("landscape/beta_max", "the whole grid")):
    """Loss variation, gradient predictiveness (bands over the step grid) and effective
    beta-smoothness over training, one row of panels per learning rate (Fig 4, 9, 10,
    12, 13). `landscape`: `analysis.probe_frame(runs, "landscape", expand=False)`;
    `beta`: its column of the effective beta and the grid it is the maximum over, named
    in the panel's title (the paper's Fig 4c: {1/2 ... 4} x LR)."""
    by_lr, palette, _ = per_learning_rate(landscape)
    fig, axes = plt.subplots(len(by_lr), 3, figsize=(16, 4 * len(by_lr)), squeeze=False,
                             constrained_layout=True)
    panels = [("landscape/loss", "loss landscape", "loss"),
              ("landscape/grad_change", "gradient predictiveness", "||grad L(theta') - g||")]
    for row, (lr, frame) in zip(axes, by_lr):
        for ax, (prefix, title, ylabel) in zip(row, panels):
            for name, rows in frame.groupby("name", sort=True):
                # The band of one run is over the step sizes (the paper's view); seeds
                # are summarized by the median of each edge, not an envelope over seeds.
                per_step = rows.groupby("step").agg(low=(f"{prefix}_min", "median"),
                                                    high=(f"{prefix}_max", "median"))
                ax.fill_between(per_step.index, per_step["low"], per_step["high"], alpha=0.4,
                                color=palette[name], label=name)
            ax.set(title=f"LR {lr:g}: {title}\n(band over step sizes, median over seeds)",
                   xlabel="training step",
                   ylabel=ylabel)
            if logy:
                ax.set_yscale("log")
            ax.legend()
        names = {k: v for k, v in palette.items() if k in set(frame["name"])}
        _lines(row[2], frame, beta[0], f"LR {lr:g}: effective beta-smoothness\n(max over "
               f"{beta[1]})", "beta", logy, hue="name", palette=names)
    return fig


def plot_per_eta(rows, title):
    """The landscape's ratios variant / reference at matched training loss against the
    step size (one panel per ledger row with `per_eta`: loss band, gradient change,
    beta), each with its 95 % interval; 1 (no difference) dashed. Where a ratio is
    drawn as a function of the grid, no one step size decides it."""
    rows = [row for row in rows
            if any(e["ratio"] is not None for e in row.measured.get("per_eta", []))]
    if not rows:  # none matched at any step size
        from pipeline.results.analysis import NothingToPlot
        raise NothingToPlot("no ledger row with a matched ratio at any step size")
    fig, axes = plt.subplots(1, len(rows), figsize=(4.6 * len(rows), 3.8), squeeze=False,
                             constrained_layout=True)
    for ax, row in zip(axes[0], rows):
        points = [e for e in row.measured["per_eta"] if e["ratio"] is not None]
        x = np.array([e["multiplier"] for e in points])
        y = np.array([e["ratio"] for e in points])
        low, high = (np.array([e["interval"][k] for e in points]) for k in (0, 1))
        ax.errorbar(x, y, yerr=[y - low, high - y], marker="o", capsize=3, color="C0")
        ax.axhline(1.0, color="grey", ls="--", lw=1)
        ax.set(xscale="log", yscale="log", xlabel="step size eta / LR",
               ylabel=f"{row.variant} / {row.reference} at matched loss",
               title=f"{row.key} (LR {row.lr:g}, {row.seeds} seeds)")
    fig.suptitle(title)
    return fig


def plot_distribution_shift(distributions, layer):
    """Change of the per-channel mean and variance of layer #`layer`'s activations
    between consecutive probe steps (mean absolute change over channels), per variant:
    how far the distribution the next layer sees moves (Fig 8). `distributions`:
    `analysis.probe_frame(runs, "distributions")`."""
    import pandas as pd
    rows = []
    distributions = distributions[distributions["distributions/layer"] == layer]
    for (variant, seed), frame in distributions.groupby(["variant", "seed"]):
        frame = frame.sort_values("step")
        for statistic in ("mean", "var"):
            values = np.stack(frame[f"distributions/channel_{statistic}"].to_numpy())
            change = np.abs(np.diff(values, axis=0)).mean(axis=1)
            rows += [{"variant": variant, "seed": seed, "step": step, "statistic": statistic,
                      "change": value} for step, value in zip(frame["step"].to_numpy()[1:], change)]
    if not rows:
        from pipeline.results.analysis import NothingToPlot
        raise NothingToPlot("the distribution shift needs two probe steps of a run; these runs "
                            "have one (set probes.distributions.every below train.steps)")
    frame = with_seed_counts(pd.DataFrame(rows))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for ax, statistic, label in zip(axes, ("mean", "var"), ("mean", "variance")):
        _lines(ax, frame[frame["statistic"] == statistic], "change",
               f"layer #{layer}: change of the per-channel {label}",
               "|change| since the previous probe step", logy=True)
    return fig


def plot_channel_statistics(distributions, layer, seed=None, channels=8):
    """Per-channel view of layer #`layer`: the mean and variance of each of its first
    `channels` channels over training, one line per channel, one column per variant,
    for one seed (default: the smallest each variant has). Where noisy BN's shift is the
    point, the channels' own paths show it. `distributions`: `analysis.probe_frame(runs,
    "distributions")`."""
    from pipeline.results.analysis import NothingToPlot
    frame = distributions[distributions["distributions/layer"] == layer]
    variants = sorted(frame["variant"].unique())
    if frame.empty:
        raise NothingToPlot(f"no distribution records of layer #{layer}")
    # One y scale per row, so that the size of each variant's shift compares at a glance.
    fig, axes = plt.subplots(2, len(variants), figsize=(4.5 * len(variants), 6.5),
                             sharex=True, sharey="row", squeeze=False, constrained_layout=True)
    for column, variant in enumerate(variants):
        rows = frame[frame["variant"] == variant]
        chosen = seed if seed is not None else rows["seed"].min()
        rows = rows[rows["seed"] == chosen].sort_values("step")
        for row, (statistic, label) in enumerate((("mean", "mean"), ("var", "variance"))):
            values = np.stack(rows[f"distributions/channel_{statistic}"].to_numpy())
            ax = axes[row, column]
            for channel in range(min(channels, values.shape[1])):
                ax.plot(rows["step"], values[:, channel], lw=1, color=f"C{channel}")
            ax.set(title=f"{variant} (seed {chosen}): channel {label}s" if row == 0 else None,
                   ylabel=f"per-channel {label}", xlabel="training step" if row == 1 else None)
    return fig


def plot_gradient_change_vs_step_size(landscape, columns=3):
    """||grad L(theta - eta g) - g|| against eta, one line per probe step coloured by
    training step, one panel per variant, `columns` panels a row (Fig 11). First seed of
    each variant. `landscape`: `analysis.probe_frame(runs, "landscape")` (one row per
    eta)."""
    variants = sorted(landscape["variant"].unique())
    rows_of_panels = -(-len(variants) // columns)
    fig, axes = plt.subplots(rows_of_panels, min(columns, len(variants)), squeeze=False,
                             figsize=(4.5 * min(columns, len(variants)), 3.8 * rows_of_panels),
                             sharey=True, constrained_layout=True)
    norm = matplotlib.colors.Normalize(landscape["step"].min(), landscape["step"].max())
    for ax, variant in zip(axes.flat, variants):
        rows = landscape[landscape["variant"] == variant]
        rows = rows[rows["seed"] == rows["seed"].min()]
        for step, curve in rows.groupby("step"):
            curve = curve.sort_values("landscape/eta")
            ax.plot(curve["landscape/eta"], curve["landscape/grad_change"],
                    color=plt.cm.viridis(norm(step)), marker="o", markersize=3)
        ax.set(title=variant, xlabel="step size eta", ylabel="gradient change",
               xscale="log", yscale="log")
    for ax in list(axes.flat)[len(variants):]:
        ax.set_visible(False)
    fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap="viridis"), ax=axes[:, -1].tolist(),
                 label="training step")
    return fig


def plot_curvature(curvature):
    """Top Hessian eigenvalue (largest magnitude, so possibly negative: BN networks at
    initialization show large negative curvature) over training, on a symlog axis."""
    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    _lines(ax, with_seed_counts(curvature), "curvature/top_eigenvalue",
           "top Hessian eigenvalue (largest |lambda|)", "lambda")
    ax.set_yscale("symlog", linthresh=1.0)
    return fig


def plot_lr_sensitivity(summary, step=None):
    """Test accuracy against the learning rate per norm (mean over seeds, band min-max),
    in every figure's colours and names; diverged runs, which have no accuracy, drawn as
    crosses at 0 in their norm's colour and counted in the legend. `summary`'s accuracies
    are at one `step` for every LR (`analysis.runs_summary(runs, step)`), named in the
    axis: runs of different lengths are not compared."""
    from pipeline.results.analysis import NORM_COLORS, NORM_NAMES
    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    frame = summary.assign(norm=summary["norm"].astype(str))
    for norm, rows in frame.groupby("norm", sort=True):
        color, name = NORM_COLORS.get(norm, "C9"), NORM_NAMES.get(norm, norm)
        finished = rows[rows["status"] != "diverged"]
        if not finished.empty:
            curve = finished.groupby("lr")["test_accuracy"].agg(["mean", "min", "max"])
            ax.plot(curve.index, curve["mean"], marker="o", color=color, label=name)
            ax.fill_between(curve.index, curve["min"], curve["max"], color=color, alpha=0.2,
                            linewidth=0)
        diverged = rows[rows["status"] == "diverged"]
        if not diverged.empty:
            ax.scatter(diverged["lr"], np.zeros(len(diverged)), marker="x", color=color, s=60,
                       zorder=3, label=f"{name}: {len(diverged)} diverged")
    ax.legend(title="network")
    ax.set(xscale="log", xlabel="learning rate",
           ylabel="test accuracy" + (f" at step {step}" if step is not None else ""),
           title="learning-rate sensitivity")
    return fig


def save_figure(fig, directory, name, formats=("png", "svg")):
    """Write `fig` as directory/name.<format> for each format; returns the paths."""
    from pathlib import Path
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = directory / f"{name}.{fmt}"
        fig.savefig(path, dpi=120)
        paths.append(path)
    plt.close(fig)
    return paths
