from kalm_eval.cli import main

main()
