-- TPC-H Q10, aggregated below the join to customer by hand
select
    c_custkey, c_name,
    sum(rev) as revenue,
    c_acctbal, n_name, c_address, c_phone, c_comment
from customer,
     (select o_custkey, sum(l_extendedprice * (1 - l_discount)) as rev
      from orders, lineitem
      where l_orderkey = o_orderkey
        and o_orderdate >= date '1993-10-01'
        and o_orderdate < date '1994-01-01'
        and l_returnflag = 'R'
      group by o_custkey) r,
     nation
where c_custkey = o_custkey
  and c_nationkey = n_nationkey
group by c_custkey, c_name, c_acctbal, c_phone, n_name, c_address, c_comment
order by revenue desc
limit 20
