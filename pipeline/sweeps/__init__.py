"""Many runs: planning grids and plans into runs, running them as local processes or a
Slurm job array (submitit), and their summary. Imports pipeline.core only: a sweep starts
`python -m pipeline train` processes and never a framework itself."""
