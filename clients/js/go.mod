module github.com/wsgate/wsgate/clients/js

go 1.26.0
