from algorithm import algorithm_str  # the downstream task's seed solution
from language_model import LanguageModel
from task_utility import utility  # the downstream task's utility (it has .budget and .uses)


def meta_utility(improve_str: str):
    """Scores an improver (higher is better, at most 1). It may be called 25 times.

    improve_str must define improve_algorithm(initial_solution, utility, language_model).
    It is run 5 times on the downstream solution; each run gets a fresh language model that
    allows 4 calls of at most 6 samples each. The score is the mean downstream utility of
    the programs the runs return; a run that fails scores 0.
    """
    if meta_utility.uses >= meta_utility.budget:
        return 0
    meta_utility.uses += 1
    n_runs = 5
    total = 0.0
    for _ in range(n_runs):
        namespace = {}
        try:
            exec(improve_str, namespace)
            language_model = LanguageModel(budget=4, max_responses_per_call=6)
            utility.uses = 0
            improved_str = namespace["improve_algorithm"](algorithm_str, utility, language_model)
            total += utility(improved_str) / n_runs
        except Exception:
            continue
    return total
