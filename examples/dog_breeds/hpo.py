"""The tuning job's entry point: train_model.py's training without the debugger's hook, as each of many trials
runs it. The tuner reads its objective from the log lines (`valid loss: ...`) with a metric definition.

    kennel tune --script hpo.py --data dogImages --metric "valid_loss=valid loss: ([0-9.]+)" \\
        --objective valid_loss --minimize --space space.yaml
"""

from train_model import arguments, main

if __name__ == "__main__":
    main(arguments(), debug=False)
