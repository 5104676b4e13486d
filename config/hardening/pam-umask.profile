Name: jafar: the login.defs umask for every session (pam_umask)
Default: yes
Priority: 0
Session-Type: Additional
Session-Interactive-Only: no
Session:
	optional	pam_umask.so
