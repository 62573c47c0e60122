"""Everything that talks to Kaggle, through the official client's KaggleApi (nothing else imports `kaggle`).

client.py       signing in, retries, one-line errors
downloads.py    competition files and datasets, resumable and checked
submissions.py  upload, the list of submissions, the leaderboard
"""

from kagglecifar.kaggle_io.client import retry_delay  # noqa: F401
from kagglecifar.kaggle_io.downloads import (  # noqa: F401
    DATASET_RECORD,
    REQUIRED_FILES,
    DownloadSummary,
    dataset_folder,
    download_competition,
    download_dataset,
)
from kagglecifar.kaggle_io.submissions import (  # noqa: F401
    Leaderboard,
    LeaderboardEntry,
    SubmissionInfo,
    SubmissionResult,
    leaderboard,
    list_submissions,
    upload_submission,
)
