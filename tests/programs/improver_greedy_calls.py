def improve_algorithm(initial_solution, utility, language_model):
    """Calls the LM past its budget: the engine must refuse the extra call."""
    for _ in range(language_model.budget + 1):
        language_model.prompt("expert", "hello", n_responses=1)
    return initial_solution
