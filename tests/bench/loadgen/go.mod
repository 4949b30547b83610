module devmlops.local/loadgen

go 1.22
