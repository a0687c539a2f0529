from helpers import extract_code


def improve_algorithm(initial_solution, utility, language_model):
    """Asks once and returns the first program it gets, without scoring it."""
    message = f"Improve this solution:\n```python\n{initial_solution}\n```"
    replies = language_model.batch_prompt("You are a programmer.", [message], temperature=0.7)
    return extract_code(replies)[0]
