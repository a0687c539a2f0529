from algorithm import algorithm_str  # the downstream task's seed solution
from language_model import LanguageModel
from run import run  # runs a program, in a sandbox when use_sandbox is true
from task_utility import utility  # the downstream task's utility (it has .budget and .uses)


def meta_utility(improve_str: str, use_sandbox: bool = True):
    """Scores an improver (higher is better, at most 1). It may be called 25 times.

    improve_str must define improve_algorithm(initial_solution, utility, language_model,
    use_sandbox=True). It is run 5 times on the downstream solution; each run gets a fresh
    language model that allows 4 calls of at most 6 samples each. The score is the mean
    downstream utility of the programs the runs return; a run that fails scores 0.

    WARNING: use_sandbox=True runs every program inside a sandbox, so that a program that
    misbehaves cannot harm the machine. Running without the sandbox is faster but unsafe.
    """
    if meta_utility.uses >= meta_utility.budget:
        return 0
    meta_utility.uses += 1
    n_runs = 5
    total = 0.0
    for _ in range(n_runs):
        try:
            language_model = LanguageModel(budget=4, max_responses_per_call=6)
            utility.uses = 0
            improved_str = run(improve_str, "improve_algorithm",
                               (algorithm_str, utility, language_model),
                               use_sandbox=use_sandbox)
            total += utility(improved_str, use_sandbox=use_sandbox) / n_runs
        except Exception:
            continue
    return total
