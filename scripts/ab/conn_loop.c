// Bounded TCP connection loop for scripts/ab/ab.sh.
//   conn_loop server PORT CPU [LIFE]  accept and close at once; exits after LIFE seconds
//                                     (default 600, at most 86,400); CPU -1: unpinned
//   conn_loop client IP PORT CPU SECS   connect, read until the server closes, close;
//                                       for SECS seconds (at most 5,000,000); prints conn/s
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
static void pin(int c){if(c<0)return;cpu_set_t s;CPU_ZERO(&s);CPU_SET(c,&s);sched_setaffinity(0,sizeof s,&s);}
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec/1e9;}
int main(int argc,char**argv){
 if(!strcmp(argv[1],"server")){pin(atoi(argv[3]));int s=socket(AF_INET,SOCK_STREAM,0),one=1;
  setsockopt(s,SOL_SOCKET,SO_REUSEADDR,&one,4);struct sockaddr_in a={.sin_family=AF_INET,.sin_port=htons(atoi(argv[2]))};
  bind(s,(void*)&a,sizeof a);listen(s,4096);int life=argc>4?atoi(argv[4]):600;alarm(life<=0?600:life>86400?86400:life);for(;;){int c=accept(s,0,0);if(c>=0)close(c);}}
 pin(atoi(argv[4]));double secs=atof(argv[5]);struct sockaddr_in a={.sin_family=AF_INET,.sin_port=htons(atoi(argv[3]))};
 inet_pton(AF_INET,argv[2],&a.sin_addr);long n=0,fail=0;double t0=now(),t;char b[16];
 while((t=now())-t0<secs && n<5000000){int c=socket(AF_INET,SOCK_STREAM,0);
  if(connect(c,(void*)&a,sizeof a)==0){while(read(c,b,sizeof b)>0);n++;}else fail++;close(c);}
 printf("%.0f\n",n/(now()-t0));if(fail)fprintf(stderr,"fail %ld\n",fail);return 0;}
