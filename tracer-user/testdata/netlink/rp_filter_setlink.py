# Sends RTM_SETLINK ifindex=N with IFLA_AF_SPEC{AF_INET{IFLA_INET_CONF{[8]=value}}} and prints the hex it sent.
import socket,struct,sys
idx=int(sys.argv[1]); val=int(sys.argv[2])
def nla(t,payload):
    l=4+len(payload); return struct.pack('=HH',l,t)+payload+b'\0'*((4-l%4)%4)
NESTED=0x8000
conf=nla(8,struct.pack('=I',val))
spec=nla(26|NESTED, nla(2|NESTED, nla(1|NESTED, conf)))
body=struct.pack('=BBHiII',0,0,0,idx,0,0)+spec
hdr=struct.pack('=IHHII',16+len(body),19,0x5,1,0)
msg=hdr+body
s=socket.socket(socket.AF_NETLINK,socket.SOCK_RAW,socket.NETLINK_ROUTE)
s.bind((0,0)); s.send(msg)
r=s.recv(4096); err=struct.unpack('=i',r[16:20])[0]
print(msg.hex(), 'err', err)
