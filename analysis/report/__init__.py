"""Reports: the charts (the one place a figure is drawn), the HTML report and the csv/json/md writers."""
