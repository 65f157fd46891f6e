from kalm_eval.report.cli import main

main()
