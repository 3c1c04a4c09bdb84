from tweetlm.cli import main

main()
