from gradcam_cli.cli import main

main(prog_name="gradcam")
